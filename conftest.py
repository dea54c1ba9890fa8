pytest_plugins = ["novapulse_devkit.testing"]
