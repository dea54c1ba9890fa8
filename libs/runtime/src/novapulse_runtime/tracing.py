"""OpenTelemetry tracing: resource from SERVICE_NAME, OTLP export when configured, flushed on shutdown."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, Tracer, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

log = logging.getLogger(__name__)


def sampler(name: str = "parentbased_always_on", ratio: float = 1.0) -> Sampler:
    """The sampler named by ``OTEL_TRACES_SAMPLER`` (values of the OpenTelemetry SDK configuration
    specification) with ``ratio`` (``OTEL_TRACES_SAMPLER_ARG``, 0-1) for the ``*traceidratio`` ones.

    :raises ValueError: an unknown name or a ratio outside 0-1 (settings validate both before this).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"sampler ratio must be 0-1, got {ratio}")
    root: Sampler
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        root = ALWAYS_ON
    elif base == "always_off":
        root = ALWAYS_OFF
    elif base == "traceidratio":
        root = TraceIdRatioBased(ratio)
    else:
        raise ValueError(f"unknown sampler {name!r}")
    return ParentBased(root) if name.startswith("parentbased_") else root


class PrimedIds(RandomIdGenerator):
    """The SDK's random ids, except that the next trace id may be set beforehand (:attr:`next_trace_id`, 0:
    none): :class:`SamplingShortcut` draws a new trace's id to take the sampling decision itself, and when
    the span is to be recorded the SDK's ``start_span`` takes that very id, so its sampler decides alike."""

    def __init__(self) -> None:
        self.next_trace_id = 0

    def generate_trace_id(self) -> int:
        primed = self.next_trace_id
        if primed:
            self.next_trace_id = 0
            return primed
        return super().generate_trace_id()


_BUS_ATTRIBUTES = 8
"""At most this many attributes are set by the bus on one of its spans (:func:`.bus.tracing.attributes`)."""
_LOW_64 = (1 << 64) - 1
_ALWAYS = 1 << 64
"""A root bound every trace id is under (``ALWAYS_ON``)."""


_UNSET = Status(StatusCode.UNSET)
"""The status of a new span (``Status`` has no setters: one object serves every span, as in the SDK's
``ReadableSpan`` default)."""
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_RANDOM = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
_DEFAULT = TraceFlags(TraceFlags.DEFAULT)


class RecordedSpan(trace.Span, ReadableSpan):
    """A recording span started by :meth:`SamplingShortcut.start`: the OpenTelemetry ``Span`` API for the code
    that runs inside it (``get_current_span()``, child spans, ``set_attribute``, events, status, exceptions),
    and, once ended, the finished ``ReadableSpan`` handed as it is to the provider's span processors (so the
    ``BatchSpanProcessor`` queues it and the configured ``SpanExporter`` receives it).

    What the SDK's own span does at start — attribute cleaning under a lock, bounded event and link lists,
    a ``ReadableSpan`` copy at the end — is left out until it is needed: the attributes the bus sets are
    plain strings and integers within the span limits, kept in the dict given; the first ``set_attribute``,
    ``add_event`` or ``add_link`` of other code turns them into the SDK's bounded containers with the
    tracer's :class:`~opentelemetry.sdk.trace.SpanLimits`, so limits, dropped counts and value cleaning
    are the SDK's. After :meth:`end` the span no longer changes (later calls are ignored with a warning, as
    the SDK does), which is why it can be exported without a copy."""

    def __init__(
        self,
        shortcut: SamplingShortcut,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, str | int],
    ) -> None:
        # ReadableSpan's fields, set here rather than by its __init__ (which would build an empty Resource)
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = shortcut.instrumentation_info
        self._instrumentation_scope = shortcut.instrumentation_scope
        self._parent = parent
        self._start_time: int | None = time_ns()
        self._end_time: int | None = None
        self._attributes: Any = attributes if shortcut.plain_attributes else shortcut.bounded(attributes)
        self._events: Any = ()
        self._links: Any = ()
        self._resource = shortcut.resource
        self._status = _UNSET
        self._shortcut = shortcut
        self._lock = shortcut.lock

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'

    def get_span_context(self) -> SpanContext:
        context: SpanContext = self._context  # type: ignore[assignment]  # always set (ReadableSpan allows None)
        return context

    def is_recording(self) -> bool:
        return self._end_time is None

    def _ended(self, what: str) -> bool:
        """True (with the SDK's warning) when the span has ended; call with :attr:`_lock` held."""
        if self._end_time is None:
            return False
        log.warning("Tried calling %s on an ended span.", what)
        return True

    def _bounded_attributes(self) -> BoundedAttributes:
        if not isinstance(self._attributes, BoundedAttributes):
            self._attributes = self._shortcut.bounded(self._attributes)
        return self._attributes

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        with self._lock:
            if not self._ended("set_attributes"):
                self._bounded_attributes()._set_items(attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        with self._lock:
            if not self._ended("set_attribute"):
                self._bounded_attributes()[key] = value

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        limits = self._shortcut.limits
        bounded = BoundedAttributes(
            limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )
        event = Event(name=name, attributes=bounded, timestamp=timestamp)
        with self._lock:
            if not self._ended("add_event"):
                if not isinstance(self._events, BoundedList):
                    self._events = BoundedList(limits.max_events)
                self._events.append(event)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if not (context and (context.is_valid or (attributes or context.trace_state))):  # the SDK's rule
            return
        limits = self._shortcut.limits
        bounded = BoundedAttributes(
            limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )
        with self._lock:
            if not self._ended("add_link"):
                if not isinstance(self._links, BoundedList):
                    self._links = BoundedList(limits.max_links)
                self._links.append(Link(context=context, attributes=bounded))

    def update_name(self, name: str) -> None:
        with self._lock:
            if not self._ended("update_name"):
                self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """The SDK's rule: a status ``OK`` is final, ``UNSET`` is ignored; ``description`` goes with a bare
        :class:`~opentelemetry.trace.StatusCode` only."""
        with self._lock:
            if self._ended("set_status"):
                return
            code = status.status_code if isinstance(status, Status) else status
            if self._status.status_code is StatusCode.OK or code is StatusCode.UNSET:
                return
            if isinstance(status, Status):
                if description is not None:
                    log.warning(
                        "Description %s ignored. Use either `Status` or `(StatusCode, Description)`", description
                    )
                self._status = status
            else:
                self._status = Status(status, description)

    record_exception = SdkSpan.record_exception
    """The SDK's: an ``exception`` event with the type, message, stack trace and ``escaped`` flag."""

    def end(self, end_time: int | None = None) -> None:
        """End the span (``end_time`` in ns since the epoch, default now) and hand it to the span processors."""
        with self._lock:
            if self._end_time is not None:
                log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if isinstance(self._attributes, BoundedAttributes):
                self._attributes._immutable = True
        processor = self._shortcut.processor
        processor._on_ending(self)  # type: ignore[arg-type]  # read as a span, like the SDK's
        processor.on_end(self)


class SamplingShortcut:
    """The decision of the process's sampler, taken without the SDK's sampling machinery, for spans it drops.

    The OpenTelemetry SDK spends ~11 µs on a span its sampler drops (sampler calls, the span context, the
    context manager); a consumer that handles thousands of events a second with the chart's 10 % sampling
    drops most of its spans. :meth:`dropped` answers for the samplers :func:`sampler` builds (their SDK
    objects with default delegates, checked by :meth:`of`) exactly as ``Tracer.start_span`` would: the same
    decision from the same trace id, and the same non-recording span context (trace id, a new span id,
    flags, the parent's trace state), so the trace goes on to the handler's own calls and events.

    :meth:`start` also records the spans the sampler keeps without the SDK's span machinery (~50 µs per
    span in the SDK on the consumer's path): a :class:`RecordedSpan`, handed to the same span processors and
    so to the configured exporter."""

    def __init__(self, root_bound: int, parent_based: bool, ids: PrimedIds, tracer: Tracer) -> None:
        self.root_bound = root_bound
        """Traces whose id's low 64 bits are under this are sampled (``TraceIdRatioBased``'s rule)."""
        self.parent_based = parent_based
        self.ids = ids
        self.tracer = tracer
        self.resource = tracer.resource
        self.instrumentation_scope = tracer._instrumentation_scope
        self.instrumentation_info = tracer.instrumentation_info
        self.processor = tracer.span_processor
        """The provider's span processors (the SDK's multi-processor: processors added later are seen)."""
        self.lock = threading.Lock()
        """Guards the changes of every :class:`RecordedSpan` started here against their :meth:`~RecordedSpan.end`
        (one lock, not one per span: the sections are a few dict operations, never nested)."""
        limits: SpanLimits = tracer._span_limits
        self.limits = limits
        self.plain_attributes = limits.max_span_attribute_length is None and (
            limits.max_span_attributes is None or limits.max_span_attributes >= _BUS_ATTRIBUTES
        )
        """The bus's own attributes fit the limits as they are (else :meth:`bounded` from the start)."""

    def bounded(self, attributes: Mapping[str, types.AnyValue]) -> BoundedAttributes:
        """``attributes`` in the SDK's container for span attributes, under the tracer's span limits."""
        limits = self.limits
        return BoundedAttributes(
            limits.max_span_attributes, attributes, immutable=False, max_value_len=limits.max_span_attribute_length
        )

    @classmethod
    def of(cls, provider: TracerProvider, tracer: Any) -> SamplingShortcut | None:
        """The shortcut for spans of ``tracer`` (from ``provider``); ``None`` unless the sampler is one
        :func:`sampler` builds, the ids come from :class:`PrimedIds` and the SDK records no span metrics of
        its own (which the shortcut would bypass)."""
        ids = getattr(tracer, "id_generator", None)
        if type(tracer) is not Tracer or not isinstance(ids, PrimedIds):
            return None
        if type(getattr(tracer, "_tracer_metrics", None)) is not NoOpTracerMetrics or not tracer._is_enabled():
            return None
        chosen: Any = provider.sampler
        parent_based = type(chosen) is ParentBased
        if parent_based:
            defaults = (ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF)
            delegates = tuple(
                getattr(chosen, f"_{name}", None)
                for name in (
                    "remote_parent_sampled",
                    "remote_parent_not_sampled",
                    "local_parent_sampled",
                    "local_parent_not_sampled",
                )
            )
            if delegates != defaults:
                return None
            chosen = getattr(chosen, "_root", None)
        if chosen is ALWAYS_ON:
            bound = _ALWAYS
        elif chosen is ALWAYS_OFF:
            bound = 0
        elif type(chosen) is TraceIdRatioBased:
            bound = chosen.bound
        else:
            return None
        return cls(bound, parent_based, ids, tracer)

    def dropped(self, parent: SpanContext | None) -> SpanContext | None:
        """The context of the non-recording span the SDK would start as a child of ``parent`` (``None`` or
        invalid: a new trace) when the sampler drops it; ``None`` when the span is to be recorded (then, for
        a new trace, the drawn trace id is primed for the SDK's next ``start_span``, which must follow at
        once)."""
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            sampled = parent.trace_flags.sampled if self.parent_based else trace_id & _LOW_64 < self.root_bound
            if sampled:
                return None
            flags = _RANDOM if parent.trace_flags.random_trace_id else _DEFAULT
            state = parent.trace_state
        else:
            if self.root_bound == _ALWAYS:
                return None
            trace_id = self.ids.generate_trace_id()
            if trace_id & _LOW_64 < self.root_bound:
                self.ids.next_trace_id = trace_id
                return None
            flags = _RANDOM if self.ids.is_trace_id_random() else _DEFAULT
            state = None
        return SpanContext(trace_id, self.ids.generate_span_id(), False, flags, state)

    def start(
        self, name: str, parent: SpanContext | None, kind: SpanKind, attributes: dict[str, str | int]
    ) -> trace.Span:
        """A span of the bus, started as the SDK's ``Tracer.start_span(name, context=<parent>, kind=kind,
        attributes=attributes)`` would start it for ``parent`` (``None`` or invalid: a new trace): the
        non-recording span of :meth:`dropped` when the sampler drops it, else a :class:`RecordedSpan` with the
        same ids, flags, trace state, parent, resource, instrumentation scope and span limits, handed to the
        provider's span processors at its start and end. ``attributes`` (strings and integers) is kept by
        the span, not copied."""
        dropped = self.dropped(parent)
        if dropped is not None:
            return NonRecordingSpan(dropped)
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            flags = _SAMPLED_RANDOM if parent.trace_flags.random_trace_id else _SAMPLED
            state = parent.trace_state
            parent_context: Context | None = set_span_in_context(NonRecordingSpan(parent))
        else:
            trace_id = self.ids.next_trace_id or self.ids.generate_trace_id()
            self.ids.next_trace_id = 0
            flags = _SAMPLED_RANDOM if self.ids.is_trace_id_random() else _SAMPLED
            state = None
            parent = parent_context = None
        context = SpanContext(trace_id, self.ids.generate_span_id(), False, flags, state)
        span = RecordedSpan(self, name, context, parent, kind, attributes)
        self.processor.on_start(span, parent_context=parent_context)  # type: ignore[arg-type]
        return span


class SpanBatcher(BatchSpanProcessor):
    """The SDK's ``BatchSpanProcessor`` — same queue, export thread, batch size, schedule, ``OTEL_BSP_*``
    settings, flush and shutdown, same exporter calls — queueing a finished span without the SDK's per-span
    ``os.getpid()`` system call (~0.7 µs): after a fork the at-fork hook the SDK registers already re-creates
    the queue and the thread in the child. A full queue, a shut-down processor or a platform without
    ``os.register_at_fork`` take the SDK's own path (its warnings and drop metrics)."""

    def __init__(self, exporter: SpanExporter) -> None:
        super().__init__(exporter)
        batch = self._batch_processor
        self._lean = hasattr(os, "register_at_fork") and all(
            hasattr(batch, name) for name in ("_queue", "_max_queue_size", "_max_export_batch_size", "_worker_awaken")
        )

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if not (context and context.trace_flags.sampled):
            return
        batch = self._batch_processor
        queue = batch._queue
        if not self._lean or batch._shutdown or len(queue) >= batch._max_queue_size:
            batch.emit(span)
            return
        queue.appendleft(span)
        if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
            batch._worker_awaken.set()


class Tracing:
    """Owns the process's tracer provider. Spans are always created (so trace ids reach the logs and
    ``traceparent`` travels); they are exported only when an exporter is configured."""

    def __init__(
        self,
        service: str,
        role: str,
        otlp_endpoint: str = "",
        exporter: SpanExporter | None = None,
        sampling: Sampler | None = None,
    ) -> None:
        resource = Resource.create({"service.name": service, "service.namespace": "novapulse", "novapulse.role": role})
        # ``sampling`` None: parent-based, always on for new traces (the OpenTelemetry default)
        # PrimedIds: the SDK's random ids, which SamplingShortcut can prime (see there)
        self.provider = TracerProvider(resource=resource, sampler=sampling or sampler(), id_generator=PrimedIds())
        if exporter is None and otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
        self.exporter = exporter
        """The span exporter the provider's batch processor feeds (``None``: spans are not exported)."""
        if exporter is not None:
            self.provider.add_span_processor(SpanBatcher(exporter))
        self.tracer = self.provider.get_tracer("novapulse")
        self.shortcut = SamplingShortcut.of(self.provider, self.tracer)
        """The cheap decision for spans of :attr:`tracer` its sampler drops, and the lean recorded spans of the
        bus (``None``: ask the SDK)."""

    def shutdown(self) -> None:
        self.provider.force_flush(timeout_millis=5000)
        self.provider.shutdown()


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def span_attributes(**attrs: Any) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in attrs.items() if v is not None}
