"""Multi-instance load test through the real gateway (``python -m bench.scale``, ``make bench-scale``)."""
