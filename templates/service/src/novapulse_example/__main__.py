"""``python -m novapulse_example api|worker|all``."""

from novapulse_runtime.process import main

from .bootstrap import SPEC

main(SPEC)
