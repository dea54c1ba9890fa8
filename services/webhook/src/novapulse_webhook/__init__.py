"""NovaPulse webhook service: customers' endpoints, Standard Webhooks signing, durable retries with attempt
logs, replay, secret rotation and SSRF-safe delivery."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec

from . import bootstrap
from .settings import WebhookSettings

SPEC = ServiceSpec(
    name="webhook",
    settings_cls=WebhookSettings,
    api=bootstrap.api,
    worker=bootstrap.worker,
    title="NovaPulse webhooks",
    package="novapulse_webhook",
)

__all__ = ["SPEC"]
