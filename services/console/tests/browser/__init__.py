"""The console's browser tests: a package, so that their ``stack`` fixture is package-scoped (stopped after the
last of them instead of idling to the end of the test session)."""
