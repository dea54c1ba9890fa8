"""Password policy and argon2id parameters."""

from __future__ import annotations

import asyncio
import time

from novapulse_auth.passwords import PasswordHashing, common_passwords, password_problem


def test_policy_refuses_short_long_common_and_personal() -> None:
    assert password_problem("Sh0rt!") is not None
    assert password_problem("x" * 129 + "Aa1") is not None
    for common in ["password", "Password1", "qwerty123", "iloveyou!", "football2024", "Dragon123!", "11111111"]:
        assert password_problem(common) is not None, common
    assert password_problem("annabelle-secret-9", email="annabelle@example.com") is not None
    assert password_problem("Correct-Horse-Battery-9") is None
    assert password_problem("\u00e9t\u00e9 \u00e0 la plage 2019 \u2600") is None  # unicode is fine
    assert len(common_passwords()) > 5000


async def test_argon2id_with_owasp_parameters_off_the_loop() -> None:
    hashing = PasswordHashing(memory_kib=19 * 1024, time_cost=2, workers=2)
    try:
        stored = await hashing.hash("Correct-Horse-Battery-9")
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert await hashing.verify(stored, "Correct-Horse-Battery-9")
        assert not await hashing.verify(stored, "wrong")
        assert not await hashing.verify(None, "anything")  # the dummy path fails
        assert not await hashing.verify("not-a-hash", "anything")

        # While 8 verifications run, the loop keeps ticking (hashing happens in threads, GIL released).
        ticks: list[float] = []

        async def ticker() -> None:
            for _ in range(20):
                started = time.perf_counter()
                await asyncio.sleep(0.005)
                ticks.append(time.perf_counter() - started)

        await asyncio.gather(ticker(), *(hashing.verify(stored, "x") for _ in range(8)))
        assert max(ticks) < 0.25
    finally:
        hashing.close()


async def test_hashing_threads_run_at_lower_priority() -> None:
    import os
    import threading

    hashing = PasswordHashing(memory_kib=19 * 1024, time_cost=2, workers=1)
    try:
        loop = asyncio.get_running_loop()
        niceness = await loop.run_in_executor(
            hashing._pool, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        )
        assert niceness >= os.getpriority(os.PRIO_PROCESS, 0) + 10 or niceness == 19
    finally:
        hashing.close()
