"""PyinstrumentSpanProcessor: profiles entry spans and attaches the call tree to them.

How the tree gets onto the span: in opentelemetry-sdk 1.45 ``on_end`` receives an immutable
``ReadableSpan`` and the experimental ``_on_ending`` hook runs after the attributes are
frozen, so neither can add attributes. DESIGN.md suggests wrapping the downstream
processor/exporter and forwarding an enriched copy, but that only reaches the processors the
user remembered to wrap. Instead, ``on_start`` overrides ``end`` on the profiled span
*instance* (``Span.end`` is a plain method and ``Span.__exit__``/``use_span`` call
``self.end()``): the override stops the profiler, sets the attributes with the public
``set_attributes`` while the span still records, then calls the original ``end``. Every
processor and exporter sees the tree, whatever order they were added in.

Two ways to sample a request (``profiler_mode``): pyinstrument's per-call hook on the
request's thread (the default), or the process's sampling thread (stack_sampler.py), which
reads the request thread's stack every ``sampler_interval``; asyncio requests always use
pyinstrument's strict async mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sys
import threading
import time
import types
from collections.abc import Mapping
from contextvars import Token
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind
from pyinstrument import Profiler
from pyinstrument.session import Session
from pyinstrument.stack_sampler import timing_overhead

from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor.calltree import PruneOptions, prune, tree_from_frame_records
from otel_pyinstrument_processor.config import DENIED_HEADERS, ProfilerConfig
from otel_pyinstrument_processor.processor_stats import ProcessorStats, RateLimitedLog
from otel_pyinstrument_processor.request_metrics import RequestMetrics
from otel_pyinstrument_processor.request_profile import (
    BoundedProfiler,
    ProfileMarker,
    current_profile,
    merge_worker_records,
)
from otel_pyinstrument_processor.sampling import SamplingPolicy
from otel_pyinstrument_processor.stack_sampler import SampledRequest, shared_sampler
from otel_pyinstrument_processor.wire import DEFAULT_MAX_BYTES, ProfileTooLargeError, encode_profile

_logger = logging.getLogger(__name__)

# Outside an event loop, "disabled": each Profiler samples only the OS thread it started on,
# which is what a threaded server needs, and several profilers may share a thread. Inside a
# running event loop, "strict": pyinstrument follows the request's context (each asyncio task
# has its own), records time the request spends awaiting as an <await> frame under the
# awaiting coroutine, and time other tasks run as <out-of-context>, never their frames.
_THREAD_MODE = "disabled"
_ASYNC_MODE = "strict"
_MAX_TRACKED_CHILDREN = 10_000
_SLOW_TIMER_SECONDS = 300e-9  # pyinstrument's own threshold for warning about the timer


class _ActiveProfile:
    """A running profile and the span it belongs to."""

    __slots__ = (
        "cpu_start",
        "discard",
        "finished",
        "lock",
        "marker",
        "metrics",
        "previous_end",
        "profiler",
        "sampled",
        "span",
        "thread_id",
        "token",
    )

    def __init__(
        self,
        span: Span,
        profiler: BoundedProfiler | None,
        metrics: RequestMetrics,
        marker: ProfileMarker,
    ) -> None:
        self.span = span
        self.profiler = profiler  # None in sampler mode
        self.sampled: SampledRequest | None = None  # set in sampler mode
        self.metrics = metrics
        self.thread_id = threading.get_ident()
        self.cpu_start = time.thread_time()
        self.lock = threading.Lock()
        self.finished = False
        self.discard = False  # set by shutdown: stop the profiler, attach nothing
        self.previous_end: Any = None
        self.marker = marker
        self.token: Token[ProfileMarker | None] | None = None


class PyinstrumentSpanProcessor(SpanProcessor):
    """Profiles sampled SERVER spans (and spans started with ``pystrument.profile=True``)
    with pyinstrument and attaches the call tree and summary metrics as span attributes.

    Never raises into the application: failures are counted in :attr:`stats` and logged
    (rate-limited) through this module's logger.
    """

    def __init__(
        self,
        *,
        sampling_rate: float = 1.0,
        interval: float = 0.001,
        max_profile_bytes: int = DEFAULT_MAX_BYTES,
        min_share: float = 0.005,
        route_sampling_rates: dict[str, float] | None = None,
        excluded_paths: tuple[str, ...] | list[str] = (),
        include_patterns: tuple[str, ...] | list[str] = (),
        max_profiles_per_second: float | None = None,
        slow_threshold: float = 0.0,
        max_trace_duration: float | None = None,
        track_sql: bool = True,
        track_cache: bool = True,
        track_memory: bool = False,
        slow_query_threshold: float = 0.1,
        use_timing_thread: bool | None = None,
        profiler_mode: str = "pyinstrument",
        sampler_interval: float = 0.01,
    ) -> None:
        """Raise ValueError for a ``sampling_rate`` outside [0, 1], an ``interval`` that is
        not > 0, a ``max_profile_bytes`` that is not a positive int, or a ``min_share``
        outside [0, 1); the other settings are validated as in :class:`ProfilerConfig`
        (see :meth:`from_config` for their meaning). ``use_timing_thread``: None picks
        pyinstrument's timing thread when the system clock is slow to read, as measured by
        pyinstrument. ``profiler_mode``: ``"pyinstrument"`` (pyinstrument's per-call hook,
        ``interval`` resolution) or ``"sampler"`` (one background thread per process reads
        the stacks of threads serving a profiled request every ``sampler_interval``
        seconds; far cheaper, coarser; asyncio requests still use pyinstrument)."""
        if not _is_number(sampling_rate) or not 0 <= sampling_rate <= 1:
            raise ValueError(f"sampling_rate must be a number in [0, 1], got {sampling_rate!r}")
        if not _is_number(interval) or interval <= 0:
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
        if isinstance(max_profile_bytes, bool) or not isinstance(max_profile_bytes, int):
            raise ValueError(f"max_profile_bytes must be an int, got {max_profile_bytes!r}")
        if max_profile_bytes <= 0:
            raise ValueError(f"max_profile_bytes must be > 0, got {max_profile_bytes!r}")
        if not _is_number(min_share) or not 0 <= min_share < 1:
            raise ValueError(f"min_share must be a number in [0, 1), got {min_share!r}")
        # One validation path for every setting: ProfilerConfig's.
        ProfilerConfig(
            profiler_mode=profiler_mode,
            sampler_interval=sampler_interval,
            route_sampling_rates=dict(route_sampling_rates or {}),
            excluded_paths=tuple(excluded_paths),
            include_patterns=tuple(include_patterns),
            max_profiles_per_second=max_profiles_per_second,
            slow_threshold=slow_threshold,
            max_trace_duration=max_trace_duration,
            slow_query_threshold=slow_query_threshold,
        )
        self._sampling_rate = float(sampling_rate)
        self._interval = float(interval)
        self._max_profile_bytes = max_profile_bytes
        self._min_share = float(min_share)
        self._policy = SamplingPolicy(
            sampling_rate=sampling_rate,
            route_sampling_rates=route_sampling_rates,
            excluded_paths=tuple(excluded_paths),
            include_patterns=tuple(include_patterns),
            max_profiles_per_second=max_profiles_per_second,
            rng=random.Random(),
        )
        self._slow_threshold = float(slow_threshold)
        self._max_trace_duration = max_trace_duration
        self._track_sql = track_sql
        self._track_cache = track_cache
        self._track_memory = track_memory
        self._track_children = track_sql or track_cache
        self._slow_query_threshold = float(slow_query_threshold)
        self._use_timing_thread = use_timing_thread
        self._profiler_mode = profiler_mode
        self._sampler_interval = float(sampler_interval)
        self._sampler_used = False
        self._sys_prefixes: tuple[str, ...] | None = None
        # span_id of a child span -> the metrics of the profiled entry span it belongs to.
        self._children: dict[int, RequestMetrics] = {}
        self._lock = threading.Lock()
        self._active: set[_ActiveProfile] = set()
        # Profilers whose span ended on another thread: pyinstrument can only stop a
        # profiler on its own thread, so they are stopped at that thread's next span.
        self._orphans: dict[int, list[Profiler]] = {}
        self._is_shutdown = False
        self._stats = ProcessorStats()
        self._log = RateLimitedLog(_logger)

    @classmethod
    def from_config(cls, config: ProfilerConfig) -> PyinstrumentSpanProcessor:
        """A processor with the sampling, profiling and metrics settings of ``config``."""
        return cls(
            sampling_rate=config.sampling_rate,
            interval=config.interval,
            max_profile_bytes=config.max_profile_bytes,
            min_share=config.min_share,
            route_sampling_rates=dict(config.route_sampling_rates),
            excluded_paths=config.excluded_paths,
            include_patterns=config.include_patterns,
            max_profiles_per_second=config.max_profiles_per_second,
            slow_threshold=config.slow_threshold,
            max_trace_duration=config.max_trace_duration,
            track_sql=config.track_sql,
            track_cache=config.track_cache,
            track_memory=config.track_memory,
            slow_query_threshold=config.slow_query_threshold,
            profiler_mode=config.profiler_mode,
            sampler_interval=config.sampler_interval,
        )

    @property
    def stats(self) -> ProcessorStats:
        """Counters: profiles started, attached, dropped, errors."""
        return self._stats

    @property
    def sampling_rate(self) -> float:
        return self._sampling_rate

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def profiler_mode(self) -> str:
        return self._profiler_mode

    @property
    def max_profile_bytes(self) -> int:
        return self._max_profile_bytes

    @property
    def min_share(self) -> float:
        return self._min_share

    # -- SpanProcessor -----------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Decide whether to profile ``span``; if so, start a profiler on this thread."""
        try:
            if self._orphans:
                self._reap_orphans()
            if self._is_shutdown:
                return
            current = current_profile.get()
            # The SDK's public `attributes` copies into a read-only proxy (~1 µs); the span's
            # own mapping is read, never written, here.
            attributes = getattr(span, "_attributes", None)
            if attributes is None:
                attributes = span.attributes
            if not self._wants_profile(span, attributes):
                if current is not None and current.active and self._track_children:
                    if len(self._children) >= _MAX_TRACKED_CHILDREN:
                        self._children.clear()  # children that never ended: forget them
                    self._children[span.context.span_id] = current.metrics
                return
            if current is not None and current.active:
                self._stats.increment("profiles_skipped_nested")
                return
            if not self._policy.should_profile(attributes, span.name):
                return
            self._start_profile(span, sys._getframe(1))
        except Exception:
            self._error("start", "pystrument: could not start profiling a span")

    def on_end(self, span: ReadableSpan) -> None:
        """Count a child span of a profiled entry span into its request metrics (the tree
        itself was attached just before the entry span ended)."""
        if not self._children:
            return
        try:
            context = span.context
            metrics = self._children.pop(context.span_id, None) if context else None
            if metrics is None:
                return
            start, end = span.start_time, span.end_time
            duration = (end - start) / 1e9 if start is not None and end is not None else 0.0
            metrics.add_span(
                span.attributes,
                duration,
                track_sql=self._track_sql,
                track_cache=self._track_cache,
            )
        except Exception:
            self._error("child", "pystrument: could not count a child span")

    def shutdown(self) -> None:
        """Stop profiling new spans and stop the profilers still running.

        Profilers on this thread stop now; those on other threads stop when their span ends
        (pyinstrument stops a profiler only on its own thread). No tree is attached after
        shutdown.
        """
        self._is_shutdown = True
        with self._lock:
            running = list(self._active)
        here = threading.get_ident()
        for state in running:
            state.discard = True
            if state.thread_id == here:
                self._span_ending(state)
        self._reap_orphans()
        if self._sampler_used:
            self._sampler_used = False
            shared_sampler().release(self)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here; always True."""
        return True

    # -- profiling ---------------------------------------------------------------------

    def _wants_profile(self, span: Span, attributes: Mapping[str, Any] | None) -> bool:
        requested = attributes.get(attrs.PROFILE_REQUESTED) if attributes else None
        if requested is True or requested is False:
            return requested
        return span.kind is SpanKind.SERVER

    def _timing_thread(self) -> bool:
        if self._use_timing_thread is None:
            # pyinstrument reads the clock at every call and return while profiling. Where
            # that clock is slow (some VMs: several µs a read), a timing thread that updates
            # a shared timestamp every interval is far cheaper; pyinstrument measures this
            # once per process.
            overhead = timing_overhead().get("walltime", 0.0)
            self._use_timing_thread = overhead > _SLOW_TIMER_SECONDS
            if self._use_timing_thread:
                _logger.info(
                    "pystrument: the system clock costs %.0f ns a read; profiling with "
                    "pyinstrument's timing thread",
                    overhead * 1e9,
                )
        return self._use_timing_thread

    def _start_profile(self, span: Span, caller: types.FrameType) -> None:
        if not span.is_recording():
            return
        in_event_loop = asyncio._get_running_loop() is not None
        metrics = RequestMetrics(
            track_memory=self._track_memory, slow_query_threshold=self._slow_query_threshold
        )
        # Worker threads of the request are profiled with pyinstrument (threadwork.py).
        marker = ProfileMarker(metrics, self._interval, self._use_timing_thread)
        if self._profiler_mode == "sampler" and not in_event_loop:
            state = _ActiveProfile(span, None, metrics, marker)
            self._install_end_hook(state)
            self._sampler_used = True
            state.sampled = shared_sampler().begin(
                self, self._sampler_interval, caller, self._max_trace_duration or None
            )
        else:
            profiler = BoundedProfiler(
                interval=self._interval,
                # A thread sampler cannot attribute coroutines: asyncio requests always
                # use pyinstrument's strict async mode.
                async_mode=_ASYNC_MODE if in_event_loop else _THREAD_MODE,
                max_duration=self._max_trace_duration or None,
                use_timing_thread=self._timing_thread(),
            )
            marker.use_timing_thread = profiler.use_timing_thread
            state = _ActiveProfile(span, profiler, metrics, marker)
            self._install_end_hook(state)
            try:
                profiler.start(caller_frame=caller, target_description=span.name)
            except BaseException:
                self._restore_end(state)
                raise
        with self._lock:
            self._active.add(state)
        state.token = current_profile.set(state.marker)
        self._stats.increment("profiles_started")

    def _install_end_hook(self, state: _ActiveProfile) -> None:
        span = state.span
        state.previous_end = vars(span).get("end")  # someone else's instance override
        original_end = span.end

        def end(end_time: int | None = None) -> None:
            if end_time is None:
                # Stamp the end now so the span's duration excludes the tree encoding.
                end_time = time.time_ns()
            self._span_ending(state)
            original_end(end_time)

        span.end = end  # type: ignore[method-assign]

    def _restore_end(self, state: _ActiveProfile) -> None:
        if state.previous_end is not None:
            state.span.end = state.previous_end  # type: ignore[method-assign]
        else:
            vars(state.span).pop("end", None)

    def _span_ending(self, state: _ActiveProfile) -> None:
        """Stop the profile and attach the results to the span; never raises."""
        with state.lock:
            if state.finished:
                return
            state.finished = True
            state.marker.active = False
        try:
            self._restore_end(state)
            with self._lock:
                self._active.discard(state)
            self._reset_context(state)
            if self._orphans:
                self._reap_orphans()
            attributes = self._stop_and_measure(state)
            if attributes is not None and not state.discard:
                self._attach(state.span, attributes)
        except Exception:
            self._error("finish", "pystrument: could not finish a span's profile")

    def _stop_and_measure(self, state: _ActiveProfile) -> dict[str, Any] | None:
        if state.sampled is not None:
            # The sampler's records can be taken from any thread.
            records = shared_sampler().end(state.sampled)
            cpu_time = (
                time.thread_time() - state.cpu_start
                if threading.get_ident() == state.thread_id
                else None
            )
            if state.discard:
                return None
            start_call_stack = state.sampled.start_call_stack
            duration = time.perf_counter() - state.sampled.started
            stopped_early = state.sampled.stopped_early
            interval = self._sampler_interval
            sys_prefixes = self._library_prefixes()
        else:
            session = self._stop_profiler(state)
            if session is None:
                return None
            cpu_time = time.thread_time() - state.cpu_start
            if state.discard:
                return None
            records = session.frame_records
            start_call_stack = session.start_call_stack
            duration = float(session.duration)
            stopped_early = state.profiler is not None and state.profiler.stopped_early
            interval = self._interval
            sys_prefixes = tuple(session.sys_prefixes)
        attributes: dict[str, Any] = {
            attrs.PROFILE_SAMPLE_COUNT: len(records),
            attrs.PROFILE_INTERVAL: interval,
            attrs.PROFILE_DURATION: duration,
        }
        if cpu_time is not None:
            attributes[attrs.CPU_TIME] = cpu_time
        attributes.update(state.metrics.span_attributes(track_memory=self._track_memory))
        if stopped_early:
            attributes[attrs.PROFILE_STOPPED_EARLY] = True
            self._stats.increment("profiles_stopped_early")
        if duration < self._slow_threshold:
            # Keep-if-slow: the metrics stay, the tree is never built or encoded.
            attributes[attrs.PROFILE_DROPPED_FAST] = True
            self._stats.increment("profiles_dropped_fast")
            return attributes
        try:
            if state.marker.worker_records:
                records = merge_worker_records(records, state.marker.worker_records)
            tree = tree_from_frame_records(records, start_call_stack, self._min_share)
            if tree is None:
                self._stats.increment("profiles_empty")
                return attributes
            options = PruneOptions(min_share=self._min_share, library_prefixes=sys_prefixes)
            encoded = encode_profile(
                prune(tree, options), max_bytes=self._attribute_cap(state.span)
            )
        except ProfileTooLargeError as exc:
            self._stats.increment("profiles_dropped_oversize")
            self._log.warning("oversize", "pystrument: profile dropped: %s", exc)
            return attributes
        except Exception:
            # The metrics above are still worth attaching without the tree.
            self._error("encode", "pystrument: could not build or encode a call tree")
            return attributes
        attributes[attrs.PROFILE_TREE] = encoded.tree
        attributes[attrs.PROFILE_FORMAT] = encoded.format
        attributes[attrs.PROFILE_TRUNCATED] = encoded.truncated
        return attributes

    def _stop_profiler(self, state: _ActiveProfile) -> Session | None:
        if threading.get_ident() != state.thread_id:
            with self._lock:
                self._orphans.setdefault(state.thread_id, []).append(state.profiler)
            self._stats.increment("profiles_dropped_cross_thread")
            self._log.warning(
                "cross_thread",
                "pystrument: span %r ended on another thread than it started on; its profile "
                "is dropped",
                state.span.name,
            )
            return None
        try:
            return state.profiler.stop()  # type: ignore[union-attr]
        except Exception:
            self._error("stop", "pystrument: could not stop the profiler")
            return None

    def _library_prefixes(self) -> tuple[str, ...]:
        if self._sys_prefixes is None:
            self._sys_prefixes = tuple(Session.current_sys_prefixes())
        return self._sys_prefixes

    def _attribute_cap(self, span: Span) -> int:
        # The SDK silently cuts string attributes at the span limits' value length, which
        # would corrupt the base64 text: encode under that limit instead. (`_limits` is
        # the SDK's own field; read defensively.)
        limit = getattr(getattr(span, "_limits", None), "max_span_attribute_length", None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return min(self._max_profile_bytes, limit)
        return self._max_profile_bytes

    def _attach(self, span: Span, attributes: dict[str, Any]) -> None:
        try:
            attributes.update(_redacted_headers(span))
            span.set_attributes(attributes)
        except Exception:
            self._error("attach", "pystrument: could not set profile attributes on a span")
            return
        tree = attributes.get(attrs.PROFILE_TREE)
        if tree is None:
            return
        if (span.attributes or {}).get(attrs.PROFILE_TREE) != tree:
            # e.g. the span was already at its attribute-count limit.
            self._stats.increment("errors")
            self._log.warning("attach_lost", "pystrument: the span did not keep the call tree")
            return
        self._stats.increment("profiles_attached")

    def _reset_context(self, state: _ActiveProfile) -> None:
        token, state.token = state.token, None
        if token is None:
            return
        # Ended in another context: the marker stays there but reads as finished.
        with contextlib.suppress(ValueError, RuntimeError):
            current_profile.reset(token)

    def _reap_orphans(self) -> None:
        alive = {thread.ident for thread in threading.enumerate()}
        with self._lock:
            profilers = self._orphans.pop(threading.get_ident(), None)
            # A dead thread's sampler died with it: just forget its profilers.
            for ident in [ident for ident in self._orphans if ident not in alive]:
                del self._orphans[ident]
        for profiler in profilers or ():
            try:
                profiler.stop()
            except Exception:
                # Expected only when this thread reuses the ident of a dead one.
                _logger.debug("pystrument: orphaned profiler already gone", exc_info=True)

    def _error(self, kind: str, message: str) -> None:
        self._stats.increment("errors")
        self._log.warning(kind, message, exc_info=True)


def _redacted_headers(span: Span) -> dict[str, str]:
    """Overwrites for captured credential headers (the instrumentations were told not to
    capture them; this catches an allow-list set elsewhere)."""
    redacted: dict[str, str] = {}
    for key in span.attributes or {}:
        if key.startswith(("http.request.header.", "http.response.header.")):
            name = key.rsplit(".", 1)[1].replace("_", "-")
            if name in DENIED_HEADERS:
                redacted[key] = "[REDACTED]"
    return redacted


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
