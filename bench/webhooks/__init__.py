"""Webhook pipeline benchmark (`python -m bench.webhooks`, `make bench-webhooks`)."""
