"""A profile in progress on one span, in either profiler mode: starting it, stopping it.

Two ways to sample a request (``profiler_mode``): pyinstrument's per-call hook on the
request's thread (``"pyinstrument"``), or the process's sampling thread (stack_sampler.py),
which reads the request thread's stack every ``sampler_interval`` (``"sampler"``); asyncio
requests always use pyinstrument's strict async mode, because a thread sampler cannot
attribute coroutines. Either way, stopping yields a :class:`StoppedProfile`: frame records
in pyinstrument's format, which :mod:`profile_attributes` turns into span attributes (a
sampled request without a sample, the most common kind, goes straight to its attributes).
A pyinstrument-mode profile is an :class:`ActiveProfile`; a sampled one a
:class:`SampledProfile`, which is also the sampling thread's record of the request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import types
from collections.abc import Callable, Sequence
from contextvars import Token
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import Span
from pyinstrument.session import Session
from pyinstrument.stack_sampler import timing_overhead

from otel_pyinstrument_processor.hook_profile import HookProfile
from otel_pyinstrument_processor.request_profile import ProfileMarker
from otel_pyinstrument_processor.stack_sampler import (
    SampledRequest,
    StackSampler,
    anchor_at_span_start,
    shared_sampler,
)
from otel_pyinstrument_processor.tree_builder import StackAggregator
from otel_pyinstrument_processor.wire import EncodedProfile

_logger = logging.getLogger(__name__)

_SLOW_TIMER_SECONDS = 300e-9  # pyinstrument's own threshold for warning about the timer
_new_tuple = tuple.__new__
FirstSampleEncoder = Callable[[tuple[list[str], float], Sequence[str]], EncodedProfile | None]
"""Encodes the tree of one sample ``(stack, elapsed)`` under a start call stack, or None."""


class ActiveProfile:
    """A running profile on pyinstrument's per-call hook and the span it belongs to."""

    __slots__ = (
        "cpu_start",
        "discard",
        "marker",
        "previous_end",
        "profiler",
        "span",
        "thread_id",
        "token",
    )

    def __init__(self, span: Span, marker: ProfileMarker, profiler: HookProfile) -> None:
        self.span = span
        self.profiler: HookProfile | None = profiler
        self.thread_id = marker.thread_id
        self.cpu_start = time.thread_time()
        self.discard = False  # set by shutdown: stop the profiler, attach nothing
        self.previous_end: Any = None
        self.marker = marker
        self.token: Token[ProfileMarker | None] | None = None


class SampledProfile(SampledRequest):
    """A running profile on the sampling thread and the span it belongs to: one object is
    both the request the sampling thread samples and the processor's record of it (the
    fields of :class:`ActiveProfile`), so that a profiled request makes one object, not
    two. Made by :meth:`ProfileModes.start_sampled`, which sets ``span`` and ``marker``;
    the rarely set fields are class-level defaults (see :class:`SampledRequest`)."""

    span: Span
    marker: ProfileMarker
    profiler: HookProfile | None = None
    discard = False  # set by shutdown: stop sampling, attach nothing
    previous_end: Any = None
    token: Token[ProfileMarker | None] | None = None
    # The processor's encoder of a one-sample tree (see took_sample), and what it made.
    encode_first: FirstSampleEncoder | None = None
    first_tree: EncodedProfile | None = None

    def took_sample(self, records: Sequence[tuple[list[str], float]]) -> None:
        """At the first sample, encode the tree the request will carry if it gets no
        other (most sampled requests of a fast endpoint), on the sampling thread rather
        than at the request's end; at the next, aggregate as usual (the samples so far
        included). Where the encoder cannot (a stack seen for the first time, a tree it
        hands to the full path), aggregate as usual."""
        encode = self.encode_first
        if len(records) == 1 and encode is not None:
            try:
                self.first_tree = encode(records[0], self.start_call_stack)
            except Exception:  # never fail the sampling pass: the request's end will do it
                _logger.debug("pystrument: could not encode a first sample", exc_info=True)
            if self.first_tree is not None:
                return
        SampledRequest.took_sample(self, records)


class StoppedProfile(NamedTuple):
    """What a stopped profile yields: samples (stack root first, seconds) and their context."""

    records: Sequence[tuple[list[str], float]]
    start_call_stack: Sequence[str]
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
    first_tree: EncodedProfile | None = None
    """The tree of the first record alone, encoded by the sampling thread as it took it
    (under at most the processor's ``max_profile_bytes``): the tree when it is the only
    record, there are no worker records, and the span's limits allow it."""


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
        sampler_backend: str = "auto",
        use_timing_thread: bool | None,
        slow_threshold: float = 0.0,
    ) -> None:
        self.mode = mode
        self.slow_threshold = slow_threshold
        self.interval = interval
        self.sampler_interval = sampler_interval
        self.sampler_backend = sampler_backend
        self.max_duration = max_duration or None
        self.encode_first_sample: FirstSampleEncoder | None = None
        """Set by the processor: encodes the tree of a sampled profile's first sample on
        the sampling thread (see :meth:`SampledProfile.took_sample`)."""
        self._use_timing_thread = use_timing_thread
        self._sampler_used = False
        self.sampler: StackSampler | None = None
        """The process's sampling thread, once this processor has used it."""
        self._sys_prefixes: tuple[str, ...] | None = None
        self._lock = threading.Lock()
        # Profiles whose span ended on another thread: pyinstrument's sampler can only be
        # unsubscribed on its own thread, so they are stopped at that thread's next span.
        self._orphans: dict[int, list[HookProfile]] = {}
        self.has_orphans = False
        """True while some thread has a profiler left to stop (see :meth:`reap_orphans`);
        a plain attribute, read before every span."""

    def start(self, span: Span, caller: types.FrameType, marker: ProfileMarker) -> ActiveProfile:
        """Make a pyinstrument profile of the calling thread (or its asyncio task) for
        ``span``; ``caller`` is the frame that starts the profile (its callers are the
        tree's stem). It takes no sample until :meth:`subscribe`, so that the caller can do
        its own bookkeeping first, outside the per-call hook. (The sampling thread's
        profiles are started by :meth:`start_sampled`.)"""
        in_event_loop = asyncio._get_running_loop() is not None
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
        return ActiveProfile(span, marker, profile)

    def start_sampled(self, span: Span, marker: ProfileMarker) -> SampledProfile:
        """Have the sampling thread sample the calling thread for ``span`` from now on.
        Called from the processor's ``on_start`` through one more frame (the stem of the
        tree is found from there, see :func:`~stack_sampler.anchor_at_span_start`). Only in
        sampler mode, outside an asyncio event loop (a thread sampler cannot attribute
        coroutines: :meth:`start` there)."""
        state = SampledProfile(
            marker.thread_id,
            None,
            self.max_duration,
            self.slow_threshold,
            self.sampler_interval,
            time.thread_time(),
        )
        # (Set here rather than in an __init__ of its own: a call less per request.)
        state.span = span
        state.marker = marker
        if self.encode_first_sample is not None:
            state.encode_first = self.encode_first_sample
        # This frame, the processor's, on_start, then its caller: the SDK's.
        anchor_at_span_start(state, 3)
        (self.sampler or self._sampler()).add(self, state)
        if not self._sampler_used:
            self._sampler_used = True
        return state

    def subscribe(self, state: ActiveProfile, caller: types.FrameType) -> None:
        """Turn on sampling of a pyinstrument-mode profile made by :meth:`start` (nothing
        to do in sampler mode). Raises what pyinstrument raises, e.g. RuntimeError when a
        strict profile already runs in this context."""
        profile = state.profiler
        if profile is not None:
            profile.start(caller)

    def stop(self, state: ActiveProfile) -> StoppedProfile | None:
        """Stop ``state``'s pyinstrument profile and return its samples. None when it ends
        on another thread than it started on: its profiler is stopped at that thread's next
        span (:meth:`reap_orphans`) and its samples are lost. (The sampling thread's
        profiles stop with :meth:`end_sampled`.)"""
        profile = state.profiler
        assert profile is not None
        if threading.get_ident() != state.thread_id:
            profile.abandon()  # its samples until then are lost: stop taking more
            with self._lock:
                self._orphans.setdefault(state.thread_id, []).append(profile)
                self.has_orphans = True
            return None
        records = profile.stop()
        # (tuple.__new__: a NamedTuple's constructors are Python functions. It fills in no
        # default: every field is given, test_processor checks.)
        return _new_tuple(
            StoppedProfile,
            (
                records,
                profile.start_call_stack(),
                profile.duration,
                self.interval,
                profile.stopped_early,
                self._sys_prefixes or self._library_prefixes(),
                time.thread_time() - state.cpu_start,
                profile.aggregator,
                None,
            ),
        )

    def end_sampled(self, state: SampledProfile) -> Sequence[tuple[list[str], float]]:
        """Stop sampling ``state`` (from any thread) and return its samples."""
        return (self.sampler or self._sampler()).end(state)

    def stopped_sampled(
        self,
        state: SampledProfile,
        records: Sequence[tuple[list[str], float]],
        cpu_time: float | None,
    ) -> StoppedProfile:
        """What :meth:`end_sampled` stopped, with the request's thread's ``cpu_time``
        (None when it ended on another thread)."""
        return _new_tuple(
            StoppedProfile,
            (
                records,
                state.start_call_stack,
                time.perf_counter() - state.started,
                self.sampler_interval,
                state.stopped_early,
                self._sys_prefixes or self._library_prefixes(),
                cpu_time,
                state.aggregator,
                state.first_tree,
            ),
        )

    def reap_orphans(self) -> None:
        """Stop the profiles orphaned on this thread; forget those of dead threads."""
        alive = {thread.ident for thread in threading.enumerate()}
        with self._lock:
            profiles = self._orphans.pop(threading.get_ident(), None)
            # A dead thread's sampler died with it: just forget its profiles.
            for ident in [ident for ident in self._orphans if ident not in alive]:
                del self._orphans[ident]
            self.has_orphans = bool(self._orphans)
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
        sampler = self.sampler
        if sampler is None:
            sampler = self.sampler = shared_sampler(self.sampler_backend)
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

    def library_prefixes(self) -> tuple[str, ...]:
        """The library directories of this Python (pyinstrument's), found once."""
        return self._sys_prefixes or self._library_prefixes()

    def _library_prefixes(self) -> tuple[str, ...]:
        if self._sys_prefixes is None:
            self._sys_prefixes = tuple(Session.current_sys_prefixes())
        return self._sys_prefixes
