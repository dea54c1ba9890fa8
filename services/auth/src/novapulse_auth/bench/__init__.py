"""Benchmark of the auth service (``python -m novapulse_auth.bench``, ``make bench-auth``)."""
