"""Log-in does not tell unknown e-mails from wrong passwords: same status, same body, similar time."""

from __future__ import annotations

import statistics
import time

from helpers_auth import AuthApp


async def test_unknown_email_and_wrong_password_look_the_same(app: AuthApp) -> None:
    owner = await app.register()

    async def attempt(email: str) -> tuple[int, dict[str, object], float]:
        started = time.perf_counter()
        resp = await app.post("/login", {"email": email, "password": "Wrong-password-123"})
        elapsed = time.perf_counter() - started
        body = await resp.json()
        body.pop("instance", None)
        return resp.status, body, elapsed

    await attempt("warm-up@example.com")
    await attempt(owner.email)
    unknown, wrong = [], []
    for i in range(9):  # interleaved, so load from elsewhere on the machine hits both alike
        unknown.append(await attempt(f"nobody{i}@example.com"))
        wrong.append(await attempt(owner.email))
    assert {s for s, _, _ in unknown} == {s for s, _, _ in wrong} == {401}
    assert unknown[0][1] == wrong[0][1]
    # Both paths run one argon2 verification; medians must be of the same order (generous: a noisy machine).
    t_unknown = statistics.median(t for _, _, t in unknown)
    t_wrong = statistics.median(t for _, _, t in wrong)
    assert 0.5 < t_unknown / t_wrong < 2.0, (t_unknown, t_wrong)
