"""One attempt of a claimed message: check its endpoint, wait for the endpoint's rate limit and one of its
concurrency slots, sign the payload (Standard Webhooks, https://www.standardwebhooks.com: ``webhook-id``,
``webhook-timestamp`` in Unix seconds, ``webhook-signature`` with one ``v1`` signature per active secret),
send it, and judge the answer (status class, RFC 9110 §10.2.3 ``Retry-After`` of a 429/503) for the
recorder (recorder.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime

from opentelemetry import propagate, trace

from novapulse_runtime import jsonstrict
from novapulse_runtime.clock import as_datetime, utcnow
from novapulse_runtime.documents import Doc
from novapulse_runtime.ratelimit import RateLimit, RateLimiter
from novapulse_runtime.secretbox import SecretBox, SecretBoxError

from .constants import (
    ENDPOINT_RATE_LIMIT,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    USER_AGENT,
    MessageStatus,
    Outcome,
)
from .dispatcher import Job
from .domain import classify, read_retry_after
from .endpoints import CACHE_MAX_ENTRIES, EndpointCache
from .leases import Leases
from .recorder import Recorder
from .repository import Repository, start_op
from .sender import AttemptResult, Sender
from .signing import secret_key, signature_header
from .writer import BatchWriter

log = logging.getLogger("novapulse.webhook.worker")
tracer = trace.get_tracer("novapulse.webhook")

_NON_FINITE = re.compile(r"NaN|Infinity")  # cheap pre-check before a strict parse of a stored body


def active_secrets(endpoint: Doc, now: datetime) -> list[str]:
    """Encrypted secrets that sign now: the current one, plus rotated ones still in their grace period."""
    found = []
    for s in endpoint.get("secrets") or []:
        expires = as_datetime(s.get("expires_at"))
        if expires is None or expires > now:
            found.append(s["value"])
    return found


class SigningKeys:
    """HMAC keys of endpoints' secrets, decrypted once (at most ``CACHE_MAX_ENTRIES`` kept)."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box
        self._keys: dict[str, bytes] = {}

    def of(self, endpoint: Doc, now: datetime) -> list[bytes]:
        """The keys that sign for ``endpoint`` at ``now``, current secret first.

        :raises novapulse_runtime.secretbox.SecretBoxError: a secret cannot be decrypted with the configured
            keys (``WEBHOOK_SECRET_KEYS``) or is not a ``whsec_`` secret.
        """
        keys = []
        for enc in active_secrets(endpoint, now):
            key = self._keys.get(enc)
            if key is None:
                if len(self._keys) >= CACHE_MAX_ENTRIES:  # rotated and deleted endpoints' keys do not pile up
                    self._keys.clear()
                key = self._keys[enc] = secret_key(self.box.decrypt_text(enc))
            keys.append(key)
        return keys


def signed_headers(endpoint: Doc, keys: list[bytes], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The request headers of an attempt: the endpoint's custom headers, then ``Content-Type``,
    ``User-Agent`` and the Standard Webhooks headers (``timestamp`` in Unix seconds; the signature covers
    ``"{id}.{timestamp}.{body}"``), then the trace context (W3C ``traceparent``)."""
    headers: dict[str, str] = dict(endpoint.get("headers") or {})
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            HEADER_ID: message_id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: signature_header(keys, message_id, timestamp, body),
        }
    )
    propagate.inject(headers)
    return headers


@dataclass(frozen=True)
class Answer:
    """What one sent attempt came to: the receiver's ``result``, its ``outcome`` and, for a throttling
    answer (429/503), the delay its ``Retry-After`` asked for in seconds (``None``: absent or invalid) and
    why it was invalid (``retry_after_error``, recorded on the attempt)."""

    result: AttemptResult
    outcome: Outcome
    retry_after: float | None = None
    retry_after_error: str | None = None


def judge(result: AttemptResult, now: datetime) -> Answer:
    """Judge ``result``: refused by the address policy, else by status (:func:`.domain.classify`); a
    throttling answer's ``Retry-After`` is read as RFC 9110 §10.2.3 says (:func:`.domain.read_retry_after`,
    an HTTP-date relative to ``now``)."""
    outcome = Outcome.REFUSED if result.refused else classify(result.status)
    if outcome is Outcome.THROTTLED:
        asked = read_retry_after(result.retry_after, now)
        return Answer(result, outcome, asked.seconds, asked.error)
    return Answer(result, outcome)


class Attempts:
    """Runs one claimed message (:meth:`process`, the lanes' job function) and hands the answer to the
    recorder.

    :param timeout: seconds one HTTP attempt may take in all (``WEBHOOK_TIMEOUT``).
    :param default_concurrency: attempts at once for an endpoint that does not say
        (``WEBHOOK_DEFAULT_CONCURRENCY``).
    :param limiter: enforces endpoints' ``rate_limit`` (messages per second) across every worker; ``None``:
        each lane's own gate does, per process.
    """

    def __init__(
        self,
        repo: Repository,
        writer: BatchWriter,
        endpoints: EndpointCache,
        leases: Leases,
        recorder: Recorder,
        sender: Sender,
        box: SecretBox,
        *,
        timeout: float,
        default_concurrency: int,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.endpoints = endpoints
        self.leases = leases
        self.recorder = recorder
        self.sender = sender
        self.keys = SigningKeys(box)
        self.timeout = timeout
        self.default_concurrency = default_concurrency
        self.limiter = limiter

    async def process(self, job: Job) -> None:
        """Attempt one claimed message and record what happened. Never leaves a claimed message behind:
        whatever goes wrong in here (a database error, a bug, a value that does not encode), the attempt is
        logged as a ``failure`` with the reason and the message moves on its retry schedule."""
        try:
            await self._process(job)
        except Exception as exc:
            log.exception("delivery failed unexpectedly", extra={"message_id": job.id})
            self.recorder.fail_unexpectedly(job, exc)
        finally:
            self.leases.drop(job)

    async def _process(self, job: Job) -> None:
        endpoint = await self.endpoints.endpoint(job.endpoint_id, job.org_id)
        if endpoint is None or not endpoint.get("enabled") or endpoint.get("org_id") != job.org_id:
            reason = "the endpoint was deleted" if endpoint is None else "the endpoint is disabled"
            self.recorder.finish(job, MessageStatus.FAILED, None, reason, utcnow())
            return
        rate = endpoint.get("rate_limit")
        if rate and self.limiter is not None:
            await self._rate_wait(job.endpoint_id, int(rate))
        if self.leases.slots is None:
            await self._attempt(job, endpoint)
            return
        await self.leases.take_slot(job, int(endpoint.get("concurrency") or self.default_concurrency))
        try:
            await self._attempt(job, endpoint)
        finally:
            await self.leases.release_slot(job)

    async def _rate_wait(self, endpoint_id: str, rate: int) -> None:
        """Wait for the endpoint's rate limit (``rate`` messages per second across every worker: GCRA in
        Redis, keyed by the endpoint id, burst up to ``rate``). Fails open when Redis is unreachable."""
        assert self.limiter is not None
        limit = RateLimit(ENDPOINT_RATE_LIMIT, rate, 1.0)
        while True:
            decision = await self.limiter.hit(limit, endpoint_id)
            if decision.allowed:
                return
            await asyncio.sleep(max(decision.retry_after, 0.001))

    async def _attempt(self, job: Job, endpoint: Doc) -> None:
        now = utcnow()
        lease = self.leases.lease
        if job.lease_until - now < lease / 2:  # the heartbeat fell behind (a busy loop): renew first
            lease_until = now + lease
            if not await self.repo.renew_claim(job.id, job.claim, lease_until):
                return  # another worker took it over
            job.lease_until = lease_until
        try:
            keys = self.keys.of(endpoint, now)
        except SecretBoxError as exc:
            log.error("cannot decrypt endpoint secret", extra={"endpoint_id": job.endpoint_id, "error": str(exc)})
            self.recorder.finish(job, MessageStatus.PENDING, None, "secret unavailable", now, now + lease)
            return
        if _NON_FINITE.search(job.body):  # only a body stored before payloads were strict can hold these
            try:
                jsonstrict.loads(job.body)
            except jsonstrict.InvalidJSON as exc:
                self.recorder.fail_for_good(job, f"the stored payload is not strict JSON, not sent: {exc}")
                return
        n = job.attempts + 1
        body = job.body.encode()
        url = str(endpoint["url"])
        with tracer.start_as_current_span(
            "webhook.deliver",
            kind=trace.SpanKind.CLIENT,
            attributes={"webhook.message_id": job.id, "webhook.endpoint_id": job.endpoint_id, "webhook.attempt": n},
        ):
            headers = signed_headers(endpoint, keys, job.id, int(time.time()), body)
            # The start record is batched with others and not awaited: it is guarded by the claim token, so it
            # is a no-op if the attempt's result (which clears the claim) happens to be written first.
            self.writer.put(start_op(job.id, job.claim, n, now, url))
            result = await self.sender.send(url, headers, body, self.timeout)
        done = utcnow()
        await self.recorder.record(job, endpoint, n, now, url, headers, judge(result, done), done)
