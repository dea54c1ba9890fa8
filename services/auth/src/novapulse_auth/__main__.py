from novapulse_runtime.process import main

from . import SPEC

main(SPEC)
