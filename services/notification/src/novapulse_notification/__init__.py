"""NovaPulse notification service: e-mail and in-app notifications triggered by events."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec

from .bootstrap import build
from .settings import NotificationSettings

SPEC = ServiceSpec(
    name="notification",
    settings_cls=NotificationSettings,
    build=build,
    package="novapulse_notification",
    dev_env={"MAIL_CATCHER_DIR": ".data/mail"},
)
