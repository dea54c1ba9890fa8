"""OpenTelemetry tracing: resource from SERVICE_NAME, OTLP export when configured, flushed on shutdown."""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ConcurrentMultiSpanProcessor,
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    Tracer,
    TracerProvider,
)
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
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation import _SPAN_KEY
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


_getrandbits = random.getrandbits
"""What the SDK's ``RandomIdGenerator`` draws ids with (the module's shared generator, as there)."""
_new_tuple = tuple.__new__
"""``SpanContext`` is a tuple ``(trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)``; its
``__new__`` checks the ids and ends in this."""
_OnStart = Callable[[Any, Context | None], None]
_OnEnd = Callable[[Any], None]
_EMPTY_ON_START = (SpanProcessor.on_start, BatchSpanProcessor.on_start)
_EMPTY_ON_ENDING = (SpanProcessor._on_ending, BatchSpanProcessor._on_ending)
"""The SDK's span processor methods that do nothing (a span need not call them)."""

_RUNTIME_CONTEXT = getattr(otel_context, "_RUNTIME_CONTEXT", None)
_CURRENT: ContextVar[Context] | None = (
    _RUNTIME_CONTEXT._current_context if type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext else None
)
"""The context variable holding OpenTelemetry's current context (``None``: another runtime context is
configured, ``OTEL_PYTHON_CONTEXT``, and the API's own calls are used)."""


def attach_span(span: trace.Span) -> Token[Context]:
    """Make ``span`` the current span: ``context.attach(trace.set_span_in_context(span))``, building the new
    context in one step (a copy of the current one with the span under the API's key). Returns the token
    for :func:`detach_span`."""
    if _CURRENT is None:
        return otel_context.attach(set_span_in_context(span))
    return _CURRENT.set(Context({**_CURRENT.get(), _SPAN_KEY: span}))


def detach_span(token: Token[Context]) -> None:
    """Restore the context current before :func:`attach_span` (``context.detach``: a failure is logged, not
    raised)."""
    if _CURRENT is None:
        otel_context.detach(token)
        return
    try:
        _CURRENT.reset(token)
    except Exception:  # the API's rule: detaching never raises
        log.exception("Failed to detach context")


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
    the SDK does), which is why it can be exported without a copy.

    What every span of one :class:`SamplingShortcut` shares (resource, instrumentation scope, the lock, the
    shortcut) and what a new span starts with (no end time, events or links, status ``UNSET``) are class
    attributes of the shortcut's own subclass (:attr:`SamplingShortcut.span_type`), so a span sets only its
    name, kind, context, parent, start time and attributes (``ReadableSpan``'s properties read them alike)."""

    _end_time: int | None = None
    _events: Any = ()
    _links: Any = ()
    _status = _UNSET
    _made: SpanContext | None = None
    _shortcut: SamplingShortcut
    _lock: threading.Lock

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        flags: TraceFlags,
        state: TraceState,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Any,
    ) -> None:
        # ReadableSpan's own fields, set here rather than by its __init__ (which would build an empty Resource);
        # the span context is built when first read (_context): a span queued for export holds no tuple the
        # garbage collector would have to track (TraceState and TraceFlags keep a SpanContext tracked)
        self._name = name
        self._trace_id = trace_id
        self._span_id = span_id
        self._flags = flags
        self._state = state
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._start_time: int | None = time_ns()

    @property
    def _context(self) -> SpanContext:  # type: ignore[override]  # ReadableSpan's field, never set here
        made = self._made
        if made is None:  # two threads may both build it: the same value
            made = self._made = _new_tuple(
                SpanContext, (self._trace_id, self._span_id, False, self._flags, self._state, True)
            )
        return made

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def _ended(self, what: str) -> bool:
        """True (with the SDK's warning) when the span has ended; call with :attr:`_lock` held."""
        if self._end_time is None:
            return False
        log.warning("Tried calling %s on an ended span.", what)
        return True

    def _bounded_attributes(self) -> BoundedAttributes:
        attributes: Any = self._attributes
        if type(attributes) is not BoundedAttributes:
            attributes = self._attributes = self._shortcut.bounded(attributes)
        return attributes  # type: ignore[no-any-return]

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
        """End the span (``end_time`` in ns since the epoch, default now) and hand it to the span processors
        (their ``_on_ending``, then their ``on_end``, in the order the provider calls them)."""
        with self._lock:
            if self._end_time is not None:
                log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if type(self._attributes) is BoundedAttributes:  # (not isinstance: an ABC's check costs more)
                self._attributes._immutable = True
        shortcut = self._shortcut
        if shortcut.processor._span_processors is not shortcut._seen:
            shortcut.processors()
        for hand in shortcut._ends:
            hand(self)


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
        self.span_type: type[RecordedSpan] = type(
            "RecordedSpan",
            (RecordedSpan,),
            {
                "__module__": __name__,
                "_resource": self.resource,
                "_instrumentation_scope": self.instrumentation_scope,
                "_instrumentation_info": self.instrumentation_info,
                "_shortcut": self,
                "_lock": self.lock,
            },
        )
        """The class of the spans started here: :class:`RecordedSpan` with this shortcut's shared fields."""
        self._seen: object = None
        self._starts: tuple[_OnStart, ...] = ()
        self._ends: tuple[_OnEnd, ...] = ()
        self.processors()

    def processors(self) -> tuple[tuple[_OnStart, ...], tuple[_OnEnd, ...]]:
        """The span processors' calls a span of this shortcut must make: ``on_start(span, parent_context)`` at
        its start, then ``_on_ending(span)`` and ``on_end(span)`` at its end, each in the provider's order —
        leaving out the SDK's empty ones (the batch processor's ``on_start`` and ``_on_ending``), and for a
        :class:`SpanBatcher` its :meth:`~SpanBatcher.queue` (a recorded span is sampled: ``on_end``'s check
        is known). Worked out again when the provider's processors change (a processor added later: the SDK's
        multi-processors replace their ``_span_processors`` tuple)."""
        multi = self.processor
        current = multi._span_processors
        if current is not self._seen:
            if type(multi) is SynchronousMultiSpanProcessor:
                starts = tuple(p.on_start for p in current if type(p).on_start not in _EMPTY_ON_START)
                endings = tuple(p._on_ending for p in current if type(p)._on_ending not in _EMPTY_ON_ENDING)
                ends = tuple(p.queue if type(p) is SpanBatcher else p.on_end for p in current)
                self._starts, self._ends = starts, endings + ends
            else:  # another multi-processor (the SDK's concurrent one): its own calls
                self._starts, self._ends = (multi.on_start,), (multi._on_ending, multi.on_end)
            self._seen = current
        return self._starts, self._ends

    def bounded(self, attributes: Mapping[str, types.AnyValue]) -> BoundedAttributes:
        """``attributes`` in the SDK's container for span attributes (exactly a ``BoundedAttributes``, as
        :class:`RecordedSpan` checks), under the tracer's span limits."""
        limits = self.limits
        return BoundedAttributes(
            limits.max_span_attributes, attributes, immutable=False, max_value_len=limits.max_span_attribute_length
        )

    @classmethod
    def of(cls, provider: TracerProvider, tracer: Any) -> SamplingShortcut | None:
        """The shortcut for spans of ``tracer`` (from ``provider``); ``None`` unless the sampler is one
        :func:`sampler` builds, the ids come from :class:`PrimedIds` itself (not a subclass: :meth:`start`
        draws them as it does), the span processors are the SDK's multi-processor and the SDK records no
        span metrics of its own (which the shortcut would bypass)."""
        ids = getattr(tracer, "id_generator", None)
        if type(tracer) is not Tracer or type(ids) is not PrimedIds:
            return None
        if type(tracer.span_processor) not in (SynchronousMultiSpanProcessor, ConcurrentMultiSpanProcessor):
            return None  # a processor of the application's own, called as the SDK calls it
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
        the span, not copied.

        The same decision as :meth:`dropped` and the same random draws, in the same order, as the SDK's
        ``start_span`` with :class:`PrimedIds` (``random.getrandbits``: 128 bits for a new trace id, then 64
        for the span id, drawn again while zero); the span context is built as ``SpanContext`` builds it,
        without re-checking ids that are valid by construction."""
        ids = self.ids
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            parent_flags = parent.trace_flags
            random_id = parent_flags.random_trace_id
            sampled = parent_flags.sampled if self.parent_based else trace_id & _LOW_64 < self.root_bound
            state = parent.trace_state
        else:
            parent = None
            trace_id = ids.next_trace_id
            if trace_id:
                ids.next_trace_id = 0
            else:
                trace_id = _getrandbits(128) or ids.generate_trace_id()
            random_id = True  # RandomIdGenerator.is_trace_id_random
            sampled = trace_id & _LOW_64 < self.root_bound
            state = DEFAULT_TRACE_STATE
        span_id = _getrandbits(64) or ids.generate_span_id()
        if not sampled:
            flags = _RANDOM if random_id else _DEFAULT
            return NonRecordingSpan(_new_tuple(SpanContext, (trace_id, span_id, False, flags, state, True)))
        span = self.span_type(
            name,
            trace_id,
            span_id,
            _SAMPLED_RANDOM if random_id else _SAMPLED,
            state,
            parent,
            kind,
            attributes if self.plain_attributes else self.bounded(attributes),
        )
        if self.processor._span_processors is not self._seen:
            self.processors()
        if self._starts:
            parent_context = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
            for on_start in self._starts:
                on_start(span, parent_context)
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
        if context and context.trace_flags.sampled:
            self.queue(span)

    def queue(self, span: ReadableSpan) -> None:
        """Queue a finished span known to be sampled for export (``on_end`` without its check)."""
        batch = self._batch_processor
        queue = batch._queue
        size = len(queue)
        if size >= batch._max_queue_size or batch._shutdown or not self._lean:
            batch.emit(span)
            return
        queue.appendleft(span)
        if size + 1 >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
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
