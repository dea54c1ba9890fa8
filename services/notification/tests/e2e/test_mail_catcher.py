"""``make run`` without ``SMTP_HOST``: the worker starts a real local SMTP server (aiosmtpd) that stores each
message as an ``.eml`` file, and logs where."""

from __future__ import annotations

import email
import email.policy
import os

import pytest
from helpers_notification import producer

from novapulse_devkit.servers import free_port
from novapulse_devkit.testing import wait_until
from novapulse_runtime.catalog import auth as A

pytestmark = pytest.mark.e2e


async def test_worker_without_smtp_host_stores_mail_in_the_catcher(spawn, names, tmp_path, redis_url, mongo_url):
    if os.environ.get("SMTP_HOST"):
        pytest.skip("SMTP_HOST is set in this environment")
    mail_dir = tmp_path / "mail"
    env = {"EVENTS_NAMESPACE": names, "MAIL_CATCHER_DIR": str(mail_dir), "MAIL_CATCHER_PORT": str(free_port())}
    worker = spawn("novapulse_notification", "worker", env=env)
    org = f"org-{names}"
    async with producer("auth", redis_url, mongo_url, names) as auth:
        await auth.publish(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=org, email="dev@example.test", name="Dev", role="owner", organization="D"
            ),
            org_id=org,
        )
    await wait_until(lambda: len(list(mail_dir.glob("*.eml"))) == 1, timeout=30, interval=0.1, message="an .eml file")
    [path] = mail_dir.glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "Dev <dev@example.test>"
    assert message["Subject"] == "Welcome to NovaPulse, Dev"
    assert "local mail catcher" in worker.logs()
    assert str(mail_dir) in worker.logs()


async def test_the_catcher_accepts_a_non_ascii_address_with_smtputf8(spawn, names, tmp_path, redis_url, mongo_url):
    if os.environ.get("SMTP_HOST"):
        pytest.skip("SMTP_HOST is set in this environment")
    mail_dir = tmp_path / "mail"
    env = {"EVENTS_NAMESPACE": names, "MAIL_CATCHER_DIR": str(mail_dir), "MAIL_CATCHER_PORT": str(free_port())}
    worker = spawn("novapulse_notification", "worker", env=env)
    org = f"org-{names}"
    async with producer("auth", redis_url, mongo_url, names) as auth:
        await auth.publish(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=org, email="jörg@bücher.example", name="Jörg", role="owner", organization="D"
            ),
            org_id=org,
        )
    await wait_until(
        lambda: len(list(mail_dir.glob("*.eml"))) == 1, timeout=30, interval=0.1, message=f"an .eml; {worker.logs()}"
    )
    [path] = mail_dir.glob("*.eml")
    message = email.message_from_string(path.read_bytes().decode("utf-8"), policy=email.policy.default)
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jörg", "jörg@xn--bcher-kva.example")
