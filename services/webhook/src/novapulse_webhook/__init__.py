"""NovaPulse webhook service: customers' endpoints, Standard Webhooks signing, durable retries with attempt
logs, replay, secret rotation and SSRF-safe delivery."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec

from . import bootstrap
from .settings import WebhookSettings

# Development only (make run): a fixed key and the loopback range opened so local receivers work.
DEV_SECRET_KEY = "ZGV2LW9ubHktd2ViaG9vay1rZXktZG8tbm90LXVzZSE="  # noqa: S105 - dev stack only

SPEC = ServiceSpec(
    name="webhook",
    settings_cls=WebhookSettings,
    api=bootstrap.api,
    worker=bootstrap.worker,
    title="NovaPulse webhooks",
    package="novapulse_webhook",
    dev_env={
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_SECRET_KEYS": DEV_SECRET_KEY,
    },
)

__all__ = ["SPEC"]
