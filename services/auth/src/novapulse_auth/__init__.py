"""NovaPulse auth service: organisations, users, invites, sessions and tokens, JWKS, TOTP MFA."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec

from . import bootstrap
from .settings import AuthSettings

# Development only (make run): a fixed key so the local database stays readable across restarts.
DEV_ENCRYPTION_KEY = "z1C65EF0K1fn-djyWZoFI3NpRzw0eprb7cWRvGWQMiU="

SPEC = ServiceSpec(
    name="auth",
    settings_cls=AuthSettings,
    api=bootstrap.api,
    worker=bootstrap.worker,
    title="NovaPulse auth",
    package="novapulse_auth",
    dev_env={"AUTH_ENCRYPTION_KEYS": DEV_ENCRYPTION_KEY},
)
