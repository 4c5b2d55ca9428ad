"""A profile in progress on one span, in either profiler mode: starting it, stopping it.

Two ways to sample a request (``profiler_mode``): pyinstrument's per-call hook on the
request's thread (``"pyinstrument"``), or the process's sampling thread (stack_sampler.py),
which reads the request thread's stack every ``sampler_interval`` (``"sampler"``); asyncio
requests always use pyinstrument's strict async mode, because a thread sampler cannot
attribute coroutines. Either way, stopping yields a :class:`StoppedProfile`: frame records
in pyinstrument's format, which :mod:`profile_attributes` turns into span attributes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import types
from contextvars import Token
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import Span
from pyinstrument.session import Session
from pyinstrument.stack_sampler import timing_overhead

from otel_pyinstrument_processor.hook_profile import HookProfile
from otel_pyinstrument_processor.request_metrics import RequestMetrics
from otel_pyinstrument_processor.request_profile import ProfileMarker
from otel_pyinstrument_processor.stack_sampler import SampledRequest, StackSampler, shared_sampler
from otel_pyinstrument_processor.tree_builder import StackAggregator

_logger = logging.getLogger(__name__)

_SLOW_TIMER_SECONDS = 300e-9  # pyinstrument's own threshold for warning about the timer


class ActiveProfile:
    """A running profile and the span it belongs to."""

    __slots__ = (
        "cpu_start",
        "discard",
        "finished",
        "marker",
        "metrics",
        "previous_end",
        "profiler",
        "sampled",
        "span",
        "thread_id",
        "token",
    )

    def __init__(self, span: Span, metrics: RequestMetrics, marker: ProfileMarker) -> None:
        self.span = span
        self.profiler: HookProfile | None = None  # set in pyinstrument mode
        self.sampled: SampledRequest | None = None  # set in sampler mode
        self.metrics = metrics
        self.thread_id = marker.thread_id
        self.cpu_start = time.thread_time()
        self.finished = False  # set under the processor's lock
        self.discard = False  # set by shutdown: stop the profiler, attach nothing
        self.previous_end: Any = None
        self.marker = marker
        self.token: Token[ProfileMarker | None] | None = None


class StoppedProfile(NamedTuple):
    """What a stopped profile yields: samples (stack root first, seconds) and their context."""

    records: list[tuple[list[str], float]]
    start_call_stack: list[str]
    """The frame that started the profile and its callers, root first (trims the stem)."""
    duration: float
    interval: float
    stopped_early: bool
    library_prefixes: tuple[str, ...]
    cpu_time: float | None
    """CPU seconds of the request's thread, when it was stopped on that thread."""
    aggregator: StackAggregator | None = None
    """The records already aggregated (the first ``aggregator.samples`` of them) by the
    sampling thread or, in pyinstrument mode, by the call hook as the samples came."""


class ProfileModes:
    """Starts and stops span profiles in the configured mode; owns the process-wide parts
    (the sampling thread's registration, pyinstrument profilers orphaned on other threads)."""

    def __init__(
        self,
        *,
        mode: str,
        interval: float,
        sampler_interval: float,
        max_duration: float | None,
        use_timing_thread: bool | None,
        slow_threshold: float = 0.0,
    ) -> None:
        self.mode = mode
        self.slow_threshold = slow_threshold
        self.interval = interval
        self.sampler_interval = sampler_interval
        self.max_duration = max_duration or None
        self._use_timing_thread = use_timing_thread
        self._sampler_used = False
        self._shared_sampler: StackSampler | None = None
        self._sys_prefixes: tuple[str, ...] | None = None
        self._lock = threading.Lock()
        # Profiles whose span ended on another thread: pyinstrument's sampler can only be
        # unsubscribed on its own thread, so they are stopped at that thread's next span.
        self._orphans: dict[int, list[HookProfile]] = {}

    @property
    def has_orphans(self) -> bool:
        """True while some thread has a profiler left to stop (see :meth:`reap_orphans`)."""
        return bool(self._orphans)

    def start(
        self, span: Span, caller: types.FrameType, metrics: RequestMetrics, marker: ProfileMarker
    ) -> ActiveProfile:
        """Start profiling the calling thread (or its asyncio task) for ``span``; ``caller``
        is the frame that starts the profile (its callers are the tree's stem). In
        pyinstrument mode the profile is made but takes no sample until :meth:`subscribe`,
        so that the caller can do its own bookkeeping first, outside the per-call hook."""
        in_event_loop = asyncio._get_running_loop() is not None
        state = ActiveProfile(span, metrics, marker)
        if self.mode == "sampler" and not in_event_loop:
            self._sampler_used = True
            state.sampled = (self._shared_sampler or self._sampler()).begin(
                self,
                self.sampler_interval,
                caller,
                self.max_duration,
                self.slow_threshold,
                state.cpu_start,
            )
            return state
        profile = HookProfile(
            interval=self.interval,
            # Outside an event loop a profile samples only the OS thread it started on (what
            # a threaded server needs; several may share a thread). Inside one, pyinstrument's
            # strict async mode follows the request's context (each asyncio task has its
            # own): time it awaits shows as <await> under the awaiting coroutine, time other
            # tasks run as <out-of-context>, never their frames. (A thread sampler cannot
            # attribute coroutines: asyncio requests use this mode in sampler mode too.)
            strict=in_event_loop,
            max_duration=self.max_duration,
            use_timing_thread=self._timing_thread(),
            # Keep-if-slow drops the trees of faster requests unbuilt: aggregate from then.
            aggregate_after=self.slow_threshold,
        )
        marker.use_timing_thread = profile.use_timing_thread
        state.profiler = profile
        return state

    def subscribe(self, state: ActiveProfile, caller: types.FrameType) -> None:
        """Turn on sampling of a pyinstrument-mode profile made by :meth:`start` (nothing
        to do in sampler mode). Raises what pyinstrument raises, e.g. RuntimeError when a
        strict profile already runs in this context."""
        profile = state.profiler
        if profile is not None:
            profile.start(caller)

    def stop(self, state: ActiveProfile) -> StoppedProfile | None:
        """Stop ``state``'s profile and return its samples. None when a pyinstrument profile
        ends on another thread than it started on: its profiler is stopped at that thread's
        next span (:meth:`reap_orphans`) and its samples are lost."""
        on_thread = threading.get_ident() == state.thread_id
        sampled = state.sampled
        if sampled is not None:
            # The sampler's records can be taken from any thread. (_make: a NamedTuple's
            # keyword constructor is a Python function, ~1 µs on this path.)
            records = (self._shared_sampler or self._sampler()).end(sampled)
            cpu_time = time.thread_time() - state.cpu_start if on_thread else None
            return StoppedProfile._make(
                (
                    records,
                    sampled.start_call_stack,
                    time.perf_counter() - sampled.started,
                    self.sampler_interval,
                    sampled.stopped_early,
                    self._sys_prefixes or self._library_prefixes(),
                    cpu_time,
                    sampled.aggregator,
                )
            )
        profile = state.profiler
        if profile is None:
            return None
        if not on_thread:
            profile.abandon()  # its samples until then are lost: stop taking more
            with self._lock:
                self._orphans.setdefault(state.thread_id, []).append(profile)
            return None
        records = profile.stop()
        return StoppedProfile._make(
            (
                records,
                profile.start_call_stack(),
                profile.duration,
                self.interval,
                profile.stopped_early,
                self._sys_prefixes or self._library_prefixes(),
                time.thread_time() - state.cpu_start,
                profile.aggregator,
            )
        )

    def reap_orphans(self) -> None:
        """Stop the profiles orphaned on this thread; forget those of dead threads."""
        alive = {thread.ident for thread in threading.enumerate()}
        with self._lock:
            profiles = self._orphans.pop(threading.get_ident(), None)
            # A dead thread's sampler died with it: just forget its profiles.
            for ident in [ident for ident in self._orphans if ident not in alive]:
                del self._orphans[ident]
        for profile in profiles or ():
            try:
                profile.stop()
            except Exception:
                # Expected only when this thread reuses the ident of a dead one.
                _logger.debug("pystrument: orphaned profile already gone", exc_info=True)

    def release(self) -> None:
        """Give up the shared sampling thread (it stops when no processor uses it)."""
        if self._sampler_used:
            self._sampler_used = False
            self._sampler().release(self)

    def _sampler(self) -> StackSampler:
        # The process's sampler, kept here: shared_sampler() takes a lock per call. (The
        # object survives fork; its thread and state are reset in the child.)
        sampler = self._shared_sampler
        if sampler is None:
            sampler = self._shared_sampler = shared_sampler()
        return sampler

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

    def _library_prefixes(self) -> tuple[str, ...]:
        if self._sys_prefixes is None:
            self._sys_prefixes = tuple(Session.current_sys_prefixes())
        return self._sys_prefixes
