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
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import sys
import threading
import time
import types
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind
from pyinstrument import Profiler

from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor.calltree import PruneOptions, build_call_tree, prune
from otel_pyinstrument_processor.wire import DEFAULT_MAX_BYTES, ProfileTooLargeError, encode_profile

_logger = logging.getLogger(__name__)

# "disabled": each Profiler samples only the OS thread it started on, which is what a
# threaded server needs, and several profilers may share a thread without raising. Following
# a request's asyncio task instead ("enabled"/"strict") is the later async/FastAPI work.
_ASYNC_MODE = "disabled"

_LOG_INTERVAL_SECONDS = 60.0


class _Marker:
    """What the context variable holds: only a flag, so a context that outlives its
    profile (the span ended elsewhere) keeps no span or profile data alive."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = True


# One profiler per thread/async context: set while a span of this context is profiled.
_current_profile: ContextVar[_Marker | None] = ContextVar(
    "pystrument_current_profile", default=None
)


@dataclasses.dataclass
class ProcessorStats:
    """Counters of what the processor did; read them, don't write them."""

    profiles_started: int = 0
    profiles_attached: int = 0
    profiles_empty: int = 0
    """Profiled spans that ended before pyinstrument took a sample (metrics only, no tree)."""
    profiles_skipped_nested: int = 0
    profiles_dropped_oversize: int = 0
    profiles_dropped_cross_thread: int = 0
    errors: int = 0
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    def increment(self, counter: str) -> None:
        """Add one to ``counter`` (thread-safe)."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def snapshot(self) -> dict[str, int]:
        """All counters as a dict."""
        with self._lock:
            return {
                field.name: getattr(self, field.name)
                for field in dataclasses.fields(self)
                if not field.name.startswith("_")
            }


class _RateLimitedLog:
    """Logs the first message of each kind, then at most one per interval with a count."""

    def __init__(self, logger: logging.Logger, interval: float = _LOG_INTERVAL_SECONDS) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.warning(message, *args, exc_info=exc_info)


class _ActiveProfile:
    """A running profile and the span it belongs to."""

    __slots__ = (
        "cpu_start",
        "discard",
        "finished",
        "lock",
        "marker",
        "previous_end",
        "profiler",
        "span",
        "thread_id",
        "token",
    )

    def __init__(self, span: Span, profiler: Profiler) -> None:
        self.span = span
        self.profiler = profiler
        self.thread_id = threading.get_ident()
        self.cpu_start = time.thread_time()
        self.lock = threading.Lock()
        self.finished = False
        self.discard = False  # set by shutdown: stop the profiler, attach nothing
        self.previous_end: Any = None
        self.marker = _Marker()
        self.token: Token[_Marker | None] | None = None


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
    ) -> None:
        """Raise ValueError for a ``sampling_rate`` outside [0, 1], an ``interval`` that is
        not > 0, a ``max_profile_bytes`` that is not a positive int, or a ``min_share``
        outside [0, 1)."""
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
        self._sampling_rate = float(sampling_rate)
        self._interval = float(interval)
        self._max_profile_bytes = max_profile_bytes
        self._min_share = float(min_share)
        self._random = random.Random()
        self._lock = threading.Lock()
        self._active: set[_ActiveProfile] = set()
        # Profilers whose span ended on another thread: pyinstrument can only stop a
        # profiler on its own thread, so they are stopped at that thread's next span.
        self._orphans: dict[int, list[Profiler]] = {}
        self._is_shutdown = False
        self._stats = ProcessorStats()
        self._log = _RateLimitedLog(_logger)

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
            if self._is_shutdown or not self._wants_profile(span):
                return
            current = _current_profile.get()
            if current is not None and current.active:
                self._stats.increment("profiles_skipped_nested")
                return
            if not self._sampled():
                return
            self._start_profile(span, sys._getframe(1))
        except Exception:
            self._error("start", "pystrument: could not start profiling a span")

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do: the tree was attached just before the span ended."""

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

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here; always True."""
        return True

    # -- profiling ---------------------------------------------------------------------

    def _wants_profile(self, span: Span) -> bool:
        requested = (span.attributes or {}).get(attrs.PROFILE_REQUESTED)
        if requested is True or requested is False:
            return requested
        return span.kind is SpanKind.SERVER

    def _sampled(self) -> bool:
        if self._sampling_rate >= 1.0:
            return True
        return self._random.random() < self._sampling_rate

    def _start_profile(self, span: Span, caller: types.FrameType) -> None:
        if not span.is_recording():
            return
        state = _ActiveProfile(span, Profiler(interval=self._interval, async_mode=_ASYNC_MODE))
        self._install_end_hook(state)
        try:
            state.profiler.start(caller_frame=caller, target_description=span.name)
        except BaseException:
            self._restore_end(state)
            raise
        with self._lock:
            self._active.add(state)
        state.token = _current_profile.set(state.marker)
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
            session = state.profiler.stop()
        except Exception:
            self._error("stop", "pystrument: could not stop the profiler")
            return None
        cpu_time = time.thread_time() - state.cpu_start
        if state.discard:
            return None
        attributes: dict[str, Any] = {
            attrs.PROFILE_SAMPLE_COUNT: len(session.frame_records),
            attrs.PROFILE_INTERVAL: self._interval,
            attrs.PROFILE_DURATION: float(session.duration),
            attrs.CPU_TIME: cpu_time,
        }
        try:
            tree = build_call_tree(session)
            if tree is None:
                self._stats.increment("profiles_empty")
                return attributes
            options = PruneOptions(
                min_share=self._min_share, library_prefixes=tuple(session.sys_prefixes)
            )
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
            _current_profile.reset(token)

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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
