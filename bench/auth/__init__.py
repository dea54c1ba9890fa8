"""Benchmark of the auth service (``python -m bench.auth``, ``make bench-auth``)."""
