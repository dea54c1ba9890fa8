from novapulse_runtime.process import main

from . import bootstrap

main(bootstrap.SPEC)
