"""``python -m novapulse_report api|worker|all``."""

from novapulse_runtime.process import main

from .bootstrap import SPEC

main(SPEC)
