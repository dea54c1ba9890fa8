"""The auth service's newer events on the real stream → the real worker process → mail in a real SMTP server:
``user.registration_attempted``, ``user.login_blocked`` (security notices) and
``registration.verification_requested`` (the verification link, envelope without organisation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from helpers_notification import SmtpSink, producer

from novapulse_devkit.testing import wait_until
from novapulse_runtime.catalog import auth as A

pytestmark = pytest.mark.e2e


async def test_security_notices_and_the_verification_link_arrive(
    spawn, sink: SmtpSink, token_issuer, redis_url, mongo_url, names, tmp_path: Path
):
    env = {
        **sink.env(),
        **token_issuer.env(),
        "EVENTS_NAMESPACE": names,
        "PUBLIC_BASE_URL": "https://app.example.test/",
        "VERIFY_EMAIL_PATH": "/signup/verify",
        "MAIL_CATCHER_DIR": str(tmp_path / "mail"),
    }
    org = f"org-{names}"
    worker = spawn("novapulse_notification", "worker", env=env)
    token = "v3r1fy+/=&token"
    async with producer("auth", redis_url, mongo_url, names) as auth:
        await auth.publish(
            "user.registered",
            A.UserRegistered(
                user_id="u1", org_id=org, email="kim@example.test", name="Kim", role="owner", organization="Acme"
            ),
            org_id=org,
        )
        await auth.publish(
            "user.registration_attempted",
            A.RegistrationAttempted(user_id="u1", org_id=org, ip="198.51.100.23"),
            org_id=org,
        )
        await auth.publish(
            "user.login_blocked",
            A.LoginBlocked(user_id="u1", org_id=org, ip="2001:db8::7", failures=10, scope="account", retry_after_s=900),
            org_id=org,
        )
        await auth.publish(
            "registration.verification_requested",
            A.VerificationRequested(
                email="New.Person@Example.test",
                name="<b>Nia</b> & Co",
                organization="Nia's <Org>",
                token=token,
                verify_url="https://evil.example/steal?token=x",
                expires_at=datetime(2026, 12, 1, 8, 30, tzinfo=UTC) + timedelta(hours=1),
            ),
        )
    await wait_until(
        lambda: len(sink.received) == 4, timeout=30, interval=0.1, message=f"4 mails; log:\n{worker.logs()}"
    )
    by_subject = {m.message["Subject"]: m for m in sink.to("kim@example.test")}
    attempted = by_subject["Someone tried to register with your e-mail address"]
    assert (
        "Someone tried to create a new NovaPulse account with your e-mail address (from 198.51.100.23). "
        "No account was created. If it was you, sign in or reset your password at "
        "https://app.example.test/login instead."
    ) in attempted.text
    assert "198.51.100.23" in attempted.html
    blocked = by_subject["Sign-in to your account was blocked"]
    assert (
        "Sign-in to your NovaPulse account is blocked for 15 minutes after 10 wrong passwords "
        "(the last from 2001:db8::7)."
    ) in blocked.text
    assert "always sent" in blocked.text  # critical: no opt-out link

    [verify] = sink.to("new.person@example.test")
    assert verify.message["Subject"] == "Confirm your e-mail address to finish registering Nia's <Org>"
    link = next(w for w in verify.text.split() if w.startswith("https://app.example.test/signup/verify?"))
    assert parse_qs(urlparse(link).query) == {"token": [token]}
    assert "evil.example" not in verify.text + verify.html  # the event's verify_url is ignored
    assert "2026-12-01 09:30 UTC" in verify.text
    assert "Hello <b>Nia</b> & Co," in verify.text  # plain text: as typed
    assert "Hello &lt;b&gt;Nia&lt;/b&gt; &amp; Co," in verify.html  # HTML: escaped
    assert "Nia&#39;s &lt;Org&gt;" in verify.html
    assert verify.message["To"].addresses[0].display_name == "<b>Nia</b> & Co"
    assert token not in worker.logs()
