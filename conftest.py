pytest_plugins = ["novapulse_runtime.testing"]
