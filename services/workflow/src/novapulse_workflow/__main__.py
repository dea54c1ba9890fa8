"""``python -m novapulse_workflow api|worker|all``."""

from novapulse_runtime.process import main

from .bootstrap import SPEC

main(SPEC)
