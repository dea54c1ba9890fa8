"""Signatures and secrets, checked against the reference Standard Webhooks library."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from novapulse_runtime.secretbox import SecretBox
from novapulse_runtime.secretbox import SecretBoxError as SecretError
from novapulse_webhook.signing import generate_secret, secret_key, sign, signature_header, verify

pytestmark = pytest.mark.unit


def _headers(msg_id: str, ts: int, sig: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def test_reference_library_accepts_our_signature() -> None:
    import time

    secret = generate_secret()
    body = '{"type":"invoice.paid","data":{"n":"é"}}'.encode()
    ts = int(time.time())
    header = signature_header([secret_key(secret)], "msg_1", ts, body)
    assert Webhook(secret).verify(body, _headers("msg_1", ts, header))["type"] == "invoice.paid"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", _headers("msg_1", ts, header))


def test_rotation_header_carries_both_signatures() -> None:
    import time

    old, new = generate_secret(), generate_secret()
    body = b'{"a":1}'
    ts = int(time.time())
    header = signature_header([secret_key(new), secret_key(old)], "msg_2", ts, body)
    assert len(header.split()) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, _headers("msg_2", ts, header))
    assert verify(secret_key(old), "msg_2", ts, body, header)
    assert not verify(secret_key(generate_secret()), "msg_2", ts, body, header)


def test_signature_matches_spec_example() -> None:
    # Example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign(secret_key(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        "whsec_",
        "whsec_!!!",
        "whsec_" + base64.b64encode(b"x" * 10).decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(SecretError):
        secret_key(bad)


def test_generated_secret_has_prefix_and_length() -> None:
    s = generate_secret()
    assert s.startswith("whsec_")
    assert len(secret_key(s)) == 32


def test_secret_box_rotates_keys() -> None:
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_box = SecretBox([k1])
    token = old_box.encrypt("whsec_abc")
    assert "whsec_abc" not in token
    new_box = SecretBox.from_setting(f"{k2},{k1}")
    assert new_box.decrypt_text(token) == "whsec_abc"
    rotated = new_box.rotate(token)
    assert SecretBox([k2]).decrypt_text(rotated) == "whsec_abc"
    with pytest.raises(SecretError):
        SecretBox([k2]).decrypt(token)
    with pytest.raises(SecretError):
        SecretBox.from_setting("not-a-key")
    with pytest.raises(SecretError):
        SecretBox.from_setting("")


def test_endpoint_custom_headers_masked_for_readers() -> None:
    from datetime import UTC, datetime

    from novapulse_webhook.service import endpoint_out

    now = datetime.now(UTC)
    doc = {
        "_id": "e1",
        "url": "https://x.example/hook",
        "headers": {"X-Api-Key": "k-123", "X-Team": "blue"},
        "created_at": now,
        "updated_at": now,
    }
    assert endpoint_out(doc).headers == {"X-Api-Key": "k-123", "X-Team": "blue"}
    assert endpoint_out(doc, reveal_headers=False).headers == {"X-Api-Key": "***", "X-Team": "blue"}
