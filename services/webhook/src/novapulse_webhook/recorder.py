"""Settling attempts: the attempt log, the message's next state (retry, success, failure), the endpoint's
failure state, the attempt metrics and this service's announcements (``webhook.endpoint.disabled``,
``webhook.message.failed``).

Log entries and message updates go through the group-commit writer (writer.py) and are not awaited: they are
guarded by the claim token, so their order across batches does not matter.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from novapulse_runtime.catalog.webhook import EndpointDisabled, MessageFailed
from novapulse_runtime.clock import as_datetime, utcnow
from novapulse_runtime.documents import Doc
from novapulse_runtime.metrics import Metrics

from .constants import EVENT_ENDPOINT_DISABLED, EVENT_MESSAGE_FAILED, SELF_EVENTS, MessageStatus, Outcome
from .dispatcher import Job
from .domain import RetryPolicy, decide, redact
from .endpoints import EndpointCache
from .leases import Leases
from .ports import EventPublisher
from .repository import Repository, attempt_doc, attempt_insert, finish_op, release_op
from .sender import MAX_ERROR_CHARS, clean_text
from .writer import BatchWriter

if TYPE_CHECKING:
    from .attempt import Answer

log = logging.getLogger("novapulse.webhook.worker")

LOST_ERROR = "the worker stopped during this attempt; its outcome is unknown"


class Recorder:
    """Writes what became of each attempt.

    :param policy: the retry schedule (``WEBHOOK_RETRY_SCHEDULE``, seconds).
    :param disable_after: seconds without a successful delivery after which an endpoint is disabled
        (``WEBHOOK_DISABLE_AFTER``).

    Metrics: ``novapulse_webhook_attempts_total{outcome}`` (every attempt logged, lost and unsent ones too)
    and ``novapulse_webhook_attempt_duration_seconds`` (round trips of attempts that were sent).
    """

    def __init__(
        self,
        repo: Repository,
        writer: BatchWriter,
        leases: Leases,
        endpoints: EndpointCache,
        publisher: EventPublisher,
        policy: RetryPolicy,
        disable_after: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.leases = leases
        self.endpoints = endpoints
        self.publisher = publisher
        self.policy = policy
        self.disable_after = disable_after
        self._attempts = (
            metrics.counter("novapulse_webhook_attempts_total", "Webhook delivery attempts", ("outcome",))
            if metrics
            else None
        )
        self._latency = (
            metrics.histogram("novapulse_webhook_attempt_duration_seconds", "Webhook attempt duration")
            if metrics
            else None
        )

    # --- the attempt log -------------------------------------------------------------------------------

    def log_attempt(
        self,
        job: Job,
        n: int,
        started: datetime,
        url: str,
        request_headers: dict[str, str],
        status: int | None,
        response_body: str | None,
        duration_ms: float | None,
        error: str | None,
        outcome: Outcome,
    ) -> None:
        """Write attempt ``n`` of ``job`` to the attempt log (id ``<message id>.<n>``) and count its outcome."""
        self.writer.put(
            attempt_insert(
                attempt_doc(
                    message_id=job.id,
                    org_id=job.org_id,
                    endpoint_id=job.endpoint_id,
                    attempt=n,
                    started_at=started,
                    url=url,
                    request_headers=request_headers,
                    status=status,
                    response_body=response_body,
                    duration_ms=duration_ms,
                    error=error,
                    outcome=outcome,
                )
            )
        )
        if self._attempts is not None:
            self._attempts.labels(outcome).inc()

    def log_unsent_failure(self, job: Job, n: int, now: datetime, error: str) -> None:
        """Attempt ``n`` of ``job`` logged as a ``failure`` that sent nothing (no URL, headers or response)."""
        self.log_attempt(job, n, now, "", {}, None, None, None, error, Outcome.FAILURE)

    def log_lost(self, msg: Doc, inflight: Doc) -> None:
        """Log the attempt a dead worker left in flight (``msg`` as claimed, ``inflight`` its start record)
        as ``lost``: its outcome is unknown, the next attempt sends again with the same ``webhook-id``."""
        n = int(inflight.get("attempt") or msg.get("attempts") or 0)
        self.writer.put(
            attempt_insert(
                attempt_doc(
                    message_id=msg["_id"],
                    org_id=msg["org_id"],
                    endpoint_id=msg["endpoint_id"],
                    attempt=n,
                    started_at=as_datetime(inflight.get("started_at")) or utcnow(),
                    url=inflight.get("url", ""),
                    request_headers={},
                    status=None,
                    response_body=None,
                    duration_ms=None,
                    error=LOST_ERROR,
                    outcome=Outcome.LOST,
                )
            )
        )
        if self._attempts is not None:
            self._attempts.labels(Outcome.LOST).inc()

    # --- the message's next state ----------------------------------------------------------------------

    def finish(
        self,
        job: Job,
        status: MessageStatus,
        http_status: int | None,
        error: str | None,
        now: datetime,
        next_attempt_at: datetime | None = None,
        attempts: int | None = None,
    ) -> None:
        """Release the claim with the message's new state (see :func:`.repository.finish_op`); its lease is
        no longer renewed."""
        self.leases.drop(job)  # released: no more renewals (nor withdrawal of what follows)
        self.writer.put(
            finish_op(
                job.id,
                job.claim,
                status=status,
                next_attempt_at=next_attempt_at,
                last_status=http_status,
                last_error=error,
                now=now,
                attempts=attempts,
            )
        )

    def release(self, message_id: str, claim: str, now: datetime | None = None) -> None:
        """Give back a claimed message that was never attempted: pending and due now."""
        self.writer.put(release_op(message_id, claim, now or utcnow()))

    def fail_unexpectedly(self, job: Job, exc: BaseException) -> None:
        """Finish ``job`` after an unexpected error: an attempt ``failure`` with the reason and the next
        scheduled try (the attempt id is the one the attempt would have used, so a log it already wrote is
        kept)."""
        now = utcnow()
        n = job.attempts + 1
        error = clean_text(f"internal error: {type(exc).__name__}: {exc}", MAX_ERROR_CHARS)
        self.log_unsent_failure(job, n, now, error)
        delay = self.policy.next_delay(n - job.round_start)
        self.writer.put(
            finish_op(
                job.id,
                job.claim,
                status=MessageStatus.PENDING if delay is not None else MessageStatus.FAILED,
                next_attempt_at=now + timedelta(seconds=delay) if delay is not None else None,
                last_status=None,
                last_error=error,
                now=now,
                attempts=n,
            )
        )

    def fail_for_good(self, job: Job, error: str) -> None:
        """A message that can never be sent (bad stored data): one ``failure`` attempt, message ``failed``."""
        now = utcnow()
        n = job.attempts + 1
        self.log_unsent_failure(job, n, now, error)
        self.finish(job, MessageStatus.FAILED, None, error, now, attempts=n)

    async def record(
        self,
        job: Job,
        endpoint: Doc,
        n: int,
        started: datetime,
        url: str,
        headers: dict[str, str],
        answer: Answer,
        now: datetime,
    ) -> None:
        """Settle attempt ``n`` of ``job`` (sent at ``started`` to ``url`` with ``headers``; ``answer`` is
        what came of it, judged at ``now``): the endpoint's ``failing_since``, the attempt log (headers
        redacted), the message's next state by :func:`.domain.decide` (a receiver's ``Retry-After`` replaces
        the schedule's delay, clamped to ``WEBHOOK_RETRY_AFTER_MAX``), then disabling the endpoint and the
        ``webhook.message.failed`` announcement when due."""
        result = answer.result
        outcome = answer.outcome
        if self._latency is not None:
            self._latency.observe(result.duration_ms / 1000)
        failing_since = as_datetime(endpoint.get("failing_since"))
        if outcome is not Outcome.SUCCESS and failing_since is None:
            failing_since = now
            endpoint["failing_since"] = now
            await self.repo.set_failing_since(job.endpoint_id, now)
        elif outcome is Outcome.SUCCESS and failing_since is not None:
            endpoint["failing_since"] = None
            await self.repo.clear_failing_since(job.endpoint_id)
        decision = decide(
            Outcome.FAILURE if outcome is Outcome.REFUSED else outcome,
            n - job.round_start,
            self.policy,
            now,
            retry_after=answer.retry_after,
            failing_since=failing_since,
            disable_after=self.disable_after,
        )
        error = result.error or (None if outcome is Outcome.SUCCESS else f"HTTP {result.status}")
        if answer.retry_after_error:
            error = f"{error}; {answer.retry_after_error}"
        self.log_attempt(
            job, n, started, url, redact(headers), result.status, result.body, result.duration_ms, error, outcome
        )
        if decision.succeeded:
            status = MessageStatus.SUCCEEDED
        elif decision.next_attempt_at is not None:
            status = MessageStatus.PENDING
        else:
            status = MessageStatus.FAILED
        self.finish(job, status, result.status, error, now, decision.next_attempt_at, attempts=n)
        if decision.disable_endpoint:
            await self.disable(endpoint, decision.disable_endpoint, now)
        if decision.exhausted and job.event_type not in SELF_EVENTS:
            await self._publish(
                EVENT_MESSAGE_FAILED,
                MessageFailed(
                    message_id=job.id,
                    endpoint_id=job.endpoint_id,
                    org_id=job.org_id,
                    event_type=job.event_type,
                    attempts=n,
                    last_error=error or "",
                ),
                job.org_id,
                job.id,
            )

    # --- the endpoint ----------------------------------------------------------------------------------

    async def disable(self, endpoint: Doc, reason: str, now: datetime) -> None:
        """Disable the endpoint (once, whichever worker gets there first) and announce it
        (``webhook.endpoint.disabled``)."""
        before = await self.repo.disable_endpoint(endpoint["_id"], reason, now)
        await self.endpoints.changed(endpoint)
        if before is None:
            return
        log.warning("endpoint disabled", extra={"endpoint_id": endpoint["_id"], "reason": reason})
        await self._publish(
            EVENT_ENDPOINT_DISABLED,
            EndpointDisabled(
                endpoint_id=endpoint["_id"],
                org_id=endpoint["org_id"],
                url=endpoint["url"],
                reason=reason,
                failing_since=as_datetime(before.get("failing_since")),
            ),
            endpoint["org_id"],
            endpoint["_id"],
        )

    async def _publish(self, event_type: str, data: Any, org_id: str, subject: str) -> None:
        try:
            await self.publisher.publish(event_type, data, org_id=org_id, subject=subject)
        except Exception as exc:  # an announcement must not break delivery bookkeeping
            log.error("cannot publish event", extra={"type": event_type, "error": repr(exc)})
