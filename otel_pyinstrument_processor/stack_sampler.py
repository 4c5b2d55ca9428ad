"""The sampling-thread profiler mode: one background thread samples every profiled request.

pyinstrument's profiler hooks every call and return of the profiled thread (``setstatprofile``),
which costs 30-60 % more CPU on a 1 ms endpoint. Sentry's and Pyroscope's profilers instead
read the stacks from a background thread every few milliseconds. :class:`StackSampler` does
the same for threaded (WSGI) servers: one daemon thread per process, started lazily by the
first profiled span (never at import) and again in a forked child, that every ``interval``
seconds reads :func:`sys._current_frames` for the threads that currently serve a profiled
request and appends ``(stack, elapsed)`` to that request's samples. Stacks are lists of
pyinstrument-style frame identifiers (``function\\x00file\\x00first_line``, plus the class
name as pyinstrument's ``\\x01c`` attribute), so :func:`tree_builder.tree_from_frame_records`
builds and prunes them unchanged. ``elapsed`` is wall-clock time since the request's previous
sample, so time spent waiting on I/O shows, as with pyinstrument.

The trade-off: the request thread pays only a registration (a few µs), but a request shorter
than the interval may get no sample at all, and functions shorter than the interval show
only statistically. Coroutines cannot be attributed from another thread, so asyncio
requests keep pyinstrument's strict async mode.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import time
import types

from pyinstrument.frame_info import ATTRIBUTE_MARKER_CLASS_NAME, ATTRIBUTES_SEP, IDENTIFIER_SEP

from otel_pyinstrument_processor.tree_builder import StackAggregator

_logger = logging.getLogger(__name__)

_MAX_CACHED_CODES = 20_000
_MAX_STACK_DEPTH = 2_000  # deeper stacks are cut at the request's end of it
_IDLE_AFTER = 1.0  # seconds without a request before the thread stops ticking
_PACKAGE_DIR = os.path.dirname(__file__) + os.sep


class SampledRequest:
    """The samples of one request's thread, filled by the sampling thread."""

    __slots__ = (
        "aggregate_from",
        "aggregator",
        "anchor",
        "deadline",
        "last",
        "near_codes",
        "records",
        "start_call_stack",
        "started",
        "stem_frames",
        "stopped_early",
        "thread_id",
    )

    def __init__(
        self,
        thread_id: int,
        caller: types.FrameType | None,
        max_duration: float | None,
        aggregate_after: float | None = None,
    ) -> None:
        self.thread_id = thread_id
        # The code of the frame that started the profile and of its first callers (deepest
        # first), and the frame above them from which the sampling thread walks the rest
        # of the stem (see _near_callers).
        self.near_codes, self.anchor = _near_callers(caller)
        self.start_call_stack: list[str] = []
        """Identifiers of the frame that started the profile and its callers, root first
        (pyinstrument's ``Session.start_call_stack``, used to trim the tree's stem); filled
        by the sampling thread at the first sample, so the request thread never walks it."""
        # id(frame) -> (frame, its index in start_call_stack): a sample's walk stops at the
        # first of these and reuses the identifiers above it. The frames are kept alive here
        # so that their ids cannot be reused while the request runs.
        self.stem_frames: dict[int, tuple[types.FrameType, int]] | None = None
        self.started = self.last = time.perf_counter()
        self.deadline = None if max_duration is None else self.started + max_duration
        self.records: list[tuple[list[str], float]] = []
        self.stopped_early = False
        # The sampling thread also aggregates the samples into a tree as it takes them, once
        # the request has run `aggregate_after` seconds (keep-if-slow drops faster ones'
        # trees unbuilt), so the request's thread only finishes the tree. The aggregator is
        # made at the first sample: most short requests get none.
        self.aggregator: StackAggregator | None = None
        self.aggregate_from = None if aggregate_after is None else self.started + aggregate_after

    @property
    def duration(self) -> float:
        """Seconds from the start of the profile to its last sample."""
        return self.last - self.started


class StackSampler:
    """The per-process sampling thread and the requests it samples.

    Thread-safe. :meth:`begin` registers the calling thread's request and starts the thread
    if needed; :meth:`end` unregisters it and returns its samples; :meth:`release` stops the
    thread when no processor uses it any more.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # The thread does not survive fork: the child starts its own on its first span.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._requests: dict[int, SampledRequest] = {}
        self._users: dict[int, float] = {}  # id(processor) -> its interval
        self._interval = 0.01
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._idle = False  # the thread waits on _wake (no request for _IDLE_AFTER seconds)
        self._codes: dict[types.CodeType, str] = {}

    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def begin(
        self,
        user: object,
        interval: float,
        caller: types.FrameType | None,
        max_duration: float | None = None,
        aggregate_after: float | None = None,
    ) -> SampledRequest:
        """Start sampling the calling thread for ``user`` (a processor) every ``interval``
        seconds (the thread uses the smallest interval of its users); ``caller`` is the
        frame that starts the profile (its stack is the tree's stem). A request already
        sampled on this thread is replaced. With ``aggregate_after`` (seconds), the samples
        are also aggregated into :attr:`SampledRequest.aggregator` from that age of the
        request on."""
        request = SampledRequest(threading.get_ident(), caller, max_duration, aggregate_after)
        with self._lock:
            if self._users.get(id(user)) != interval:
                self._users[id(user)] = interval
                self._interval = min(self._users.values())
            self._requests[request.thread_id] = request
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._run, name="pystrument-sampler", daemon=True
                )
                self._thread.start()
            wake, self._idle = self._idle, False
        if wake:
            self._wake.set()
        return request

    def end(self, request: SampledRequest) -> list[tuple[list[str], float]]:
        """Stop sampling ``request`` and return its samples (stack root first, elapsed s)."""
        with self._lock:
            if self._requests.get(request.thread_id) is request:
                del self._requests[request.thread_id]
            # Held frames get their callers' frame objects made as they return: let go.
            request.anchor = request.stem_frames = None
        return request.records

    def release(self, user: object) -> None:
        """Forget ``user``; stop the thread (and wait for it) when no user is left."""
        with self._lock:
            self._users.pop(id(user), None)
            if self._users:
                return
            self._stopping = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    # -- the sampling thread ---------------------------------------------------------------

    def _run(self) -> None:
        last_busy = time.monotonic()
        while True:
            with self._lock:
                # A thread that release() gave up waiting for, or whose place a begin() right
                # after release() gave to a new thread, ends here: one sampler per process.
                if self._stopping or self._thread is not threading.current_thread():
                    return
                interval = self._interval
                idle = False
                if self._requests:
                    last_busy = time.monotonic()
                elif time.monotonic() - last_busy > _IDLE_AFTER:
                    idle = self._idle = True
                    self._wake.clear()
            if idle:
                self._wake.wait()  # no request for a while: sleep until one begins
                last_busy = time.monotonic()
                continue
            # Between requests the thread keeps ticking (a wake-up per interval): waking it
            # from begin() at every request would cost a thread switch per request.
            time.sleep(interval)
            try:
                self._sample()
            except Exception:  # never let the thread die: the next pass may succeed
                _logger.debug("pystrument: a sampling pass failed", exc_info=True)

    def _sample(self) -> None:
        frames = sys._current_frames()
        now = time.perf_counter()
        with self._lock:
            for thread_id, request in self._requests.items():
                frame = frames.get(thread_id)
                if frame is None or request.stopped_early:
                    continue
                if request.deadline is not None and now > request.deadline:
                    request.stopped_early = True
                    continue
                records = request.records
                records.append((self._stack(frame, request), now - request.last))
                request.last = now
                aggregate_from = request.aggregate_from
                if aggregate_from is not None and now >= aggregate_from:
                    aggregator = request.aggregator
                    if aggregator is None:
                        aggregator = request.aggregator = StackAggregator()
                    aggregator.add_all(records[aggregator.samples :])

    def _stack(self, frame: types.FrameType | None, request: SampledRequest) -> list[str]:
        stack: list[str] = []
        codes = self._codes
        stem = request.stem_frames
        if stem is None:
            stem = request.stem_frames = self._stem(request)
        while frame is not None and len(stack) < _MAX_STACK_DEPTH:
            known = stem.get(id(frame))
            if known is not None and known[0] is frame:
                # From here up the stack is the one the profile started in.
                stack.reverse()
                return request.start_call_stack[: known[1] + 1] + stack
            identifier = codes.get(frame.f_code)
            if identifier is None:
                identifier = self._identifier(frame.f_code)
            stack.append(identifier)
            frame = frame.f_back
        stack.reverse()
        return stack

    def _stem(self, request: SampledRequest) -> dict[int, tuple[types.FrameType, int]]:
        frames: list[types.FrameType] = []
        frame, request.anchor = request.anchor, None
        while frame is not None and len(frames) < _MAX_STACK_DEPTH:
            frames.append(frame)
            frame = frame.f_back
        frames.reverse()
        identifier = self._identifier
        stack = [identifier(frame.f_code) for frame in frames]
        stack.extend(identifier(code) for code in reversed(request.near_codes))
        request.start_call_stack = stack
        # Only the anchor and its callers can appear in samples: the frames below it have
        # returned by the time the sampling thread looks.
        return {id(frame): (frame, index) for index, frame in enumerate(frames)}

    def _identifier(self, code: types.CodeType) -> str:
        identifier = self._codes.get(code)
        if identifier is None:
            if len(self._codes) >= _MAX_CACHED_CODES:
                self._codes.clear()
            identifier = self._codes[code] = frame_identifier(code)
        return identifier


_SUSPENDING = (
    inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
) | inspect.CO_ITERABLE_COROUTINE
_PLUMBING = (f"{os.sep}opentelemetry{os.sep}", f"{os.sep}contextlib.py", _PACKAGE_DIR)
_near_verdicts: dict[types.CodeType, bool] = {}


def _near_callers(
    caller: types.FrameType | None,
) -> tuple[list[types.CodeType], types.FrameType | None]:
    """The code of ``caller`` and of its callers up to the first application frame
    (deepest first), and that application frame (None at the top of the stack).

    Walking the whole stem here would cost the request's thread ~0.4 µs a frame (each
    ``f_back`` makes a frame object, and a frame object still referenced when its frame
    returns gets the frame's data copied into it; 30-50 frames in a server), so the sampling
    thread walks the rest at the first sample. That works because a returned frame keeps
    its link to its caller; a suspended generator does not (``f_back`` is None), so the
    walk here goes past the span-starting plumbing (OpenTelemetry, ``contextlib``, this
    package) and every generator frame (``start_as_current_span`` is one) to the first
    other frame. A generator further up that suspends before the first sample would cut the
    stem short: the tree is then rooted higher up the thread's stack, nothing is lost.
    """
    codes: list[types.CodeType] = []
    frame = caller
    verdicts = _near_verdicts
    while frame is not None and len(codes) < _MAX_STACK_DEPTH:
        code = frame.f_code
        plumbing = verdicts.get(code)
        if plumbing is None:
            if len(verdicts) >= _MAX_CACHED_CODES:
                verdicts.clear()
            plumbing = verdicts[code] = bool(code.co_flags & _SUSPENDING) or any(
                part in code.co_filename for part in _PLUMBING
            )
        if not plumbing:
            return codes, frame
        codes.append(code)
        frame = frame.f_back
    return codes, None


def frame_identifier(code: types.CodeType) -> str:
    """pyinstrument's frame info for ``code``: ``function\\x00file\\x00first_line``, plus
    ``\\x01c<Class>`` when the qualified name shows a class (pyinstrument reads ``self``)."""
    identifier = f"{code.co_name}{IDENTIFIER_SEP}{code.co_filename}{IDENTIFIER_SEP}"
    identifier += str(code.co_firstlineno)
    qualname: str = getattr(code, "co_qualname", code.co_name)
    owner, _, _ = qualname.rpartition(".")
    if owner and not owner.endswith(">"):
        identifier += f"{ATTRIBUTES_SEP}{ATTRIBUTE_MARKER_CLASS_NAME}{owner}"
    return identifier


_shared: StackSampler | None = None
_shared_lock = threading.Lock()


def _reset_shared_lock() -> None:
    # Another thread may have held the lock at fork: the child's copy would stay locked.
    global _shared_lock
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_shared_lock)


def shared_sampler() -> StackSampler:
    """The process's sampler (created on first use; its thread starts on first request)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = StackSampler()
        return _shared
