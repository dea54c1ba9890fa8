"""The event port's fake records what the services emit (used by unit tests of the service layer)."""

from __future__ import annotations

from novapulse_auth.events import RecordingOutbox
from novapulse_runtime.catalog.auth import MfaEnabled


async def test_recording_outbox() -> None:
    outbox = RecordingOutbox()
    async with outbox.transaction() as session:
        await outbox.add("mfa.enabled", MfaEnabled(user_id="u", org_id="o"), org_id="o", subject="u", session=session)
    assert outbox.types() == ["mfa.enabled"]
    assert outbox.events[0].org_id == "o"
