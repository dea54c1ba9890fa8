"""``python -m novapulse_console api``."""

from novapulse_runtime.process import main

from .bootstrap import SPEC

main(SPEC)
