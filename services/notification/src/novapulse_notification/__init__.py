"""NovaPulse notification service: e-mail and in-app notifications triggered by events."""

from __future__ import annotations

from novapulse_runtime.process import ServiceSpec

from . import bootstrap
from .settings import NotificationSettings

SPEC = ServiceSpec(
    name="notification",
    settings_cls=NotificationSettings,
    api=bootstrap.api,
    worker=bootstrap.worker,
    title="NovaPulse notification",
    package="novapulse_notification",
    # make run: the catcher keeps its mail under the stack's data dir and moves with NOVAPULSE_PORT_OFFSET.
    dev_env={"MAIL_CATCHER_DIR": "{data_dir}/mail", "MAIL_CATCHER_PORT": "{port:1025}"},
)
