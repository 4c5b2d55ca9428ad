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

A stack can be read only while this thread holds the GIL, which a computing request thread
gives up when it blocks or after the interpreter's switch interval: the stack read is often
not the one of the moment the sample was due. Each sample stands for the thread's state at
that moment (:func:`thread_state`, from the wait for the GIL and the thread's CPU clock):
where its stack is, off the CPU there (a ``[wait]`` frame), or computing in code that has
returned since (a ``[cpu]`` frame under the deepest frame that persisted since the previous
sample); without this, a CPU burst shorter than the switch interval read as the wait that
ended it.

The trade-off: the request thread pays only a registration (a few µs), but a request shorter
than the interval may get no sample at all, and functions shorter than the interval show
only statistically. Registering and unregistering take no lock in the common case (as
Sentry's profiler appends to a deque): :meth:`StackSampler.begin` puts the request in a
dict of pending registrations that the sampling thread takes in at its next tick, and
:meth:`StackSampler.end` flags it ended; only a request the thread has already taken in
waits for a sampling pass in progress, so that its samples are complete when it returns.
Coroutines cannot be attributed from another thread, so asyncio requests keep pyinstrument's
strict async mode.

Where it is built and can read this process's memory (CPython 3.11 on Linux), the stacks are
read by the native thread of ``_native_sampler.c`` instead (``sampler_backend``: ``auto``, the
default, picks it): it never takes the GIL, so a tick costs the computing request thread
nothing, and it reads the stack at the moment the sample is due (whether the thread was on
the CPU is then read off the GIL's holder and the thread's CPU clock: no ``[cpu]`` frames).
The request's thread turns its samples into identifiers when it ends. The Python thread
above is the fallback everywhere else, and ``sampler_backend: python`` asks for it.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import sys
import threading
import time
import types
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import Tracer as SdkTracer
from pyinstrument.frame_info import ATTRIBUTE_MARKER_CLASS_NAME, ATTRIBUTES_SEP, IDENTIFIER_SEP

from otel_pyinstrument_processor.config import SAMPLER_BACKENDS
from otel_pyinstrument_processor.tree_builder import StackAggregator

_logger = logging.getLogger(__name__)
_perf_counter = time.perf_counter

_MAX_CACHED_CODES = 20_000
_MAX_STACK_DEPTH = 2_000  # deeper stacks are cut at the request's end of it
_IDLE_AFTER = 1.0  # seconds without a request before the thread stops ticking
_NAP = 0.1  # longest sleep between checks for release()
_PACKAGE_DIR = os.path.dirname(__file__) + os.sep


class SampledRequest:
    """The samples of one request's thread, filled by the sampling thread.

    No ``__slots__``: the fields that most requests never change are class-level defaults,
    so that registering a request sets only the few it needs (a store each costs here).
    """

    start_call_stack: Sequence[str] = ()
    """Identifiers of the frame that started the profile and its callers, root first
    (pyinstrument's ``Session.start_call_stack``, used to trim the tree's stem); filled
    by the sampling thread at the first sample, so the request thread never walks it."""
    # id(frame) -> (frame, its index in start_call_stack): a sample's walk stops at the
    # first of these and reuses the identifiers above it. The frames are kept alive here
    # so that their ids cannot be reused while the request runs.
    stem_frames: dict[int, tuple[types.FrameType, int]] | None = None
    anchor: types.FrameType | None = None
    # The samples, (stack, elapsed): a list of the request's own from the first sample on
    # (most requests shorter than the interval get none).
    records: Sequence[tuple[list[str], float]] = ()
    # True when the anchor may be span-starting plumbing (the caller of the generator that
    # started the span): the stem then starts at the first frame above it that is not.
    anchor_in_plumbing = False
    # The frames of the previous sample below the stem, innermost first (see
    # _under_persisting_frame), held until the next one so that their ids stay theirs.
    previous_frames: list[types.FrameType] | None = None
    stopped_early = False
    # The native sampler's handle of the request (see StackSampler.add), when it samples it.
    native_handle: int | None = None
    # The sampling thread also aggregates the samples into a tree as it takes them, once
    # the request has run `aggregate_after` seconds (keep-if-slow drops faster ones' trees
    # unbuilt), so the request's thread only finishes the tree. The aggregator is made at
    # the first sample: most short requests get none.
    aggregator: StackAggregator | None = None
    # Set by StackSampler.end on the request's side, and by the sampling thread when it
    # takes the request in (see StackSampler.end for why this order needs no lock).
    ended = False
    seen = False
    # The request thread's CPU clock (time.thread_time()) at its start, set on the
    # request's thread; at the previous sample (None: samples are not told apart by CPU
    # use, or its clock could not be read), and that clock's id, found by the sampling
    # thread at the first one.
    cpu_start: float | None = None
    cpu_last: float | None = None
    cpu_clock: int | None = None
    deadline: float | None = None  # perf_counter() time at which max_duration is reached
    aggregate_from: float | None = None  # perf_counter() time from which to aggregate

    def __init__(
        self,
        thread_id: int,
        anchor: types.FrameType | None,
        max_duration: float | None,
        aggregate_after: float | None = None,
        interval: float = 0.01,
        cpu_start: float | None = None,
    ) -> None:
        """A request on ``thread_id``, sampled every ``interval`` seconds from now.
        ``anchor``: the frame from which the sampling thread walks the stem at the first
        sample (see :func:`stem_anchor`); held until the end, so that it cannot be freed
        and its id reused."""
        self.thread_id = thread_id
        self.interval = interval
        if cpu_start is not None:
            self.cpu_start = self.cpu_last = cpu_start
        if anchor is not None:
            self.anchor = anchor
        self.started = self.last = self.next_due = started = _perf_counter()
        if max_duration is not None:
            self.deadline = started + max_duration
        if aggregate_after is not None:
            self.aggregate_from = started + aggregate_after

    @property
    def duration(self) -> float:
        """Seconds from the start of the profile to its last sample."""
        return self.last - self.started

    def took_sample(self, records: Sequence[tuple[list[str], float]]) -> None:
        """Called by the sampling thread, under its lock, after each sample from the
        request's ``aggregate_after`` on, with the request's samples: aggregates those not
        aggregated yet (so that the request's thread only finishes the tree)."""
        aggregator = self.aggregator
        if aggregator is None:
            aggregator = self.aggregator = StackAggregator()
        aggregator.add_all(records[aggregator.samples :])


class StackSampler:
    """The per-process sampling thread and the requests it samples.

    Thread-safe. :meth:`begin` registers the calling thread's request and starts the thread
    if needed; :meth:`end` unregisters it and returns its samples; :meth:`release` stops the
    thread when no processor uses it any more.
    """

    def __init__(self, native: Any = None) -> None:
        """``native``: the loaded native reader (:func:`native_reader`) to sample with, or
        None for the Python sampling thread."""
        self._native = native
        self._reset()
        if hasattr(os, "register_at_fork"):
            # The thread does not survive fork: the child starts its own on its first span.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # Registrations the sampling thread has not taken in yet (written without a lock).
        self._pending: dict[int, SampledRequest] = {}
        # The requests the sampling thread samples: its own, changed under _lock.
        self._requests: dict[int, SampledRequest] = {}
        self._users: set[int] = set()  # id() of each processor using the thread
        # The thread ticks at the smallest interval of the requests it samples (each
        # request is sampled at its own): a processor that was never shut down does not
        # keep the thread at its interval for the others.
        self._interval = 0.01
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._idle = False  # the thread waits on _wake (no request for _IDLE_AFTER seconds)
        # id(code) -> (code, its identifier). Keyed by id: a code object's hash is computed
        # afresh from its fields at every lookup (~0.4 µs), and a sample looks up every
        # frame of the stack. The entry holds the code, so its id cannot be reused.
        self._codes: dict[int, tuple[types.CodeType, str]] = {}

    @property
    def backend(self) -> str:
        """``native`` or ``python``: which thread reads the stacks."""
        return "python" if self._native is None else "native"

    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        if self._native is not None:
            return bool(self._native.stats()["running"])
        thread = self._thread
        return thread is not None and thread.is_alive()

    def begin(
        self,
        user: object,
        interval: float,
        caller: types.FrameType | None,
        max_duration: float | None = None,
        aggregate_after: float | None = None,
        cpu_start: float | None = None,
    ) -> SampledRequest:
        """Start sampling the calling thread for ``user`` (a processor) every ``interval``
        seconds (the thread ticks at the smallest interval of the requests it samples);
        ``caller`` is the frame that starts the profile (its stack is the tree's stem). A
        request already sampled on this thread is replaced. With ``aggregate_after``
        (seconds), the samples are also aggregated into :attr:`SampledRequest.aggregator`
        from that age of the request on. With ``cpu_start`` (the thread's
        ``time.thread_time()`` now), each sample stands for the thread's state when it was
        due (:func:`thread_state`): off the CPU, it ends in a :data:`WAIT_FRAME` frame;
        computing in code no longer on the stack, in a :data:`CPU_FRAME` frame."""
        request = SampledRequest(
            threading.get_ident(),
            stem_anchor(caller),
            max_duration,
            aggregate_after,
            interval,
            cpu_start,
        )
        self.add(user, request)
        return request

    def add(self, user: object, request: SampledRequest) -> None:
        """Start sampling ``request`` (made on its own thread, now) for ``user``, as
        :meth:`begin` does; for callers that make the request themselves."""
        native = self._native
        if native is not None:
            if id(user) not in self._users:
                self._add_user(user)
            deadline = request.deadline
            cpu = request.cpu_start
            request.native_handle = native.register(
                request.interval,
                0.0 if deadline is None else deadline - request.started,
                time.thread_time() if cpu is None else cpu,
            )
            return
        if request.interval > self._interval * 1.5:
            # The thread ticks faster (another processor's requests): a first sample at
            # a random point of this request's first interval, as a thread ticking at
            # this interval would take it.
            request.next_due += request.interval * random.random()
        if id(user) not in self._users:
            self._add_user(user)
        # A dict store is atomic: no lock on the request's thread. The sampling thread takes
        # the request in at its next tick; a later begin() on this thread replaces it.
        self._pending[request.thread_id] = request
        # Read after the store above: a thread going idle publishes _idle first and then
        # looks at _pending once more (_run), so one side always sees the other.
        if self._thread is None or self._idle:
            self._wake_up()

    def end(self, request: SampledRequest) -> Sequence[tuple[list[str], float]]:
        """Stop sampling ``request`` and return its samples (stack root first, elapsed s)."""
        handle = request.native_handle
        if handle is not None:
            # First thing: a sample read meanwhile would show this sampler's frames.
            records, stopped_early = self._native.end(handle)
            return self._ended_native(request, records, stopped_early)
        request.ended = True
        # Lock-free unless the sampling thread has taken the request in. The thread sets
        # `seen` before it reads `ended` (under its lock); this side sets `ended` before it
        # reads `seen`. So when `seen` reads False here, the thread will read `ended` as
        # True and drop the request unsampled; when it reads True, waiting for the lock
        # waits out a sampling pass in progress, and every later pass skips the request.
        if request.seen:
            with self._lock:
                # Held frames get their callers' frame objects made as they return: let go.
                request.anchor = request.stem_frames = request.previous_frames = None
        else:
            request.anchor = None
        return request.records

    def _ended_native(
        self,
        request: SampledRequest,
        records: list[tuple[list[str], float]] | None,
        stopped_early: bool,
    ) -> Sequence[tuple[list[str], float]]:
        """The rest of :meth:`end` for a request of the native reader: its samples, and,
        when it has some, its stem walked here (on the request's thread, from the held
        anchor)."""
        request.ended = True
        request.native_handle = None
        if stopped_early:
            request.stopped_early = True
        if records:
            frame, request.anchor = request.anchor, None
            if request.anchor_in_plumbing:
                frame = _application_frame(frame)
            if frame is not None:
                request.start_call_stack = self._native.stem(frame)
            _trim_plumbing(records)
            elapsed = 0.0
            for _stack, seconds in records:
                elapsed += seconds
            request.last = request.started + elapsed
            aggregate_from = request.aggregate_from
            if len(records) == 1 and aggregate_from is not None and request.last >= aggregate_from:
                # The one-sample tree's shortcut (see SampledRequest.took_sample), here
                # rather than on the sampling thread, which runs no Python code.
                request.took_sample(records)
            return records  # type: ignore[no-any-return]
        request.anchor = None
        return ()  # no sample, or a request registered before this process forked

    def request_on(self, thread_id: int) -> SampledRequest | None:
        """The request being sampled on ``thread_id``, if any (for tests and diagnostics)."""
        request = self._pending.get(thread_id)
        if request is None:
            with self._lock:
                request = self._requests.get(thread_id)
        return request if request is not None and not request.ended else None

    def _add_user(self, user: object) -> None:
        with self._lock:
            self._users.add(id(user))

    def _wake_up(self) -> None:
        """Start the sampling thread if there is none, or wake it from idling."""
        with self._lock:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._run, name="pystrument-sampler", daemon=True
                )
                self._thread.start()
            wake, self._idle = self._idle, False
        if wake:
            self._wake.set()

    def release(self, user: object) -> None:
        """Forget ``user``; stop the thread (and wait for it) when no user is left."""
        with self._lock:
            self._users.discard(id(user))
            if self._users:
                return
            self._stopping = True
            thread, self._thread = self._thread, None
        if self._native is not None:
            self._native.stop()
            return
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    # -- the sampling thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            # However the loop ended, a thread that is still the sampler's gives up its
            # place, so that the next begin() starts another (begin() checks for None only).
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _loop(self) -> None:
        last_busy = due = time.monotonic()
        while True:
            with self._lock:
                # A thread that release() gave up waiting for, or whose place a begin() right
                # after release() gave to a new thread, ends here: one sampler per process.
                if self._stopping or self._thread is not threading.current_thread():
                    return
                interval = self._interval
                idle = False
                if self._requests or self._pending:
                    last_busy = time.monotonic()
                elif time.monotonic() - last_busy > _IDLE_AFTER:
                    idle = self._idle = True
                    self._wake.clear()
            if idle:
                if self._pending:
                    # A begin() registered after the check above and may have read _idle
                    # before it was set: do not sleep through its request.
                    with self._lock:
                        self._idle = False
                    continue
                self._wake.wait()  # no request for a while: sleep until one begins
                last_busy = time.monotonic()
                continue
            # Between requests the thread keeps ticking (a wake-up per interval): waking it
            # from begin() at every request would cost a thread switch per request. A long
            # interval is slept in naps, so that release() stops the thread promptly (an
            # Event wait instead of sleep() would cost ~15 µs more CPU a tick).
            # Ticks at the interval from the previous tick's due time, not from when it
            # ended: a pass and the wait for the GIL (up to the 5 ms switch interval while
            # the request's thread computes) would otherwise stretch 10 ms to 12-16 ms, and
            # the configured rate would not be the rate. A tick that came later than a
            # whole interval is not made up for.
            ticked = time.monotonic()
            due = max(due + interval, ticked)
            while not self._stopping:
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, _NAP))
                if self._pending:
                    # A request that began during the nap may want a shorter interval.
                    # (list(): one atomic copy of a dict written without a lock.)
                    shortest = min(r.interval for r in list(self._pending.values()))
                    due = min(due, ticked + shortest)
            if self._stopping:
                continue
            try:
                self._sample(time.monotonic() - due)
            except Exception:  # never let the thread die: the next pass may succeed
                _logger.debug("pystrument: a sampling pass failed", exc_info=True)

    def _take_in(self) -> None:
        """Move the pending registrations into the sampled requests (under _lock)."""
        pending, requests = self._pending, self._requests
        while pending:
            try:
                thread_id, request = pending.popitem()  # atomic, as begin()'s store is
            except KeyError:
                break
            request.seen = True  # before reading `ended`: see end()
            if not request.ended:
                requests[thread_id] = request  # replaces the thread's previous request

    def _sample(self, late: float = 0.0) -> None:
        """One sampling pass; ``late``: seconds between the tick's due time and now (this
        thread waited that long for the GIL, past its sleep's own oversleep)."""
        read_at = time.perf_counter()
        frames = sys._current_frames()
        now = time.perf_counter()
        switch = sys.getswitchinterval()
        with self._lock:
            self._take_in()
            requests = self._requests
            shortest = None
            for thread_id, request in list(requests.items()):
                if request.ended:
                    del requests[thread_id]
                    continue
                interval = request.interval
                if shortest is None or interval < shortest:
                    shortest = interval
                # Each request at its own interval (the thread ticks at the shortest).
                if now < request.next_due:
                    continue
                frame = frames.get(thread_id)
                # A request that began after the stacks were read is sampled next time: its
                # thread's stack read here may predate the request.
                if frame is None or request.stopped_early or request.started > read_at:
                    continue
                if request.deadline is not None and now > request.deadline:
                    request.stopped_early = True
                    continue
                records = request.records
                if not records:
                    records = request.records = []
                cpu_before = walk_began = walked = None
                if request.cpu_last is not None:
                    cpu_before, walk_began = self._cpu(request, thread_id), time.perf_counter()
                    walked = []
                stack = self._stack(frame, request, walked)
                # The sample stands for the request's state when the tick was due (see
                # thread_state), so it ends there: a tick that waited for the GIL must not
                # lengthen the running sample and shorten the next one.
                due_at = now - late
                if due_at <= request.last:
                    due_at = now
                elapsed = due_at - request.last
                if cpu_before is not None and walk_began is not None:
                    cpu_after = self._cpu(request, thread_id)
                    if cpu_after is not None:
                        state = thread_state(
                            used=cpu_before - request.cpu_last,  # type: ignore[operator]
                            late=late,
                            switch_interval=switch,
                            walk_cpu=cpu_after - cpu_before,
                            walk_wall=time.perf_counter() - walk_began,
                        )
                        request.cpu_last = cpu_after
                        if state == WAITING:
                            stack.append(WAIT_FRAME)
                        elif state == UNSEEN:
                            stack = _under_persisting_frame(stack, walked, request.previous_frames)
                    # Held until the next sample, so that their ids stay theirs.
                    request.previous_frames = walked
                records.append((stack, elapsed))
                request.last = due_at
                # Due again an interval after it was due this time (not after this late
                # tick, or the thread's next tick, on time, would come too early for it
                # and be skipped); a request that fell behind is not made up for.
                request.next_due = max(request.next_due + interval, now - interval * 0.5)
                aggregate_from = request.aggregate_from
                if aggregate_from is not None and now >= aggregate_from:
                    request.took_sample(records)
            if shortest is not None:
                self._interval = shortest

    @staticmethod
    def _cpu(request: SampledRequest, thread_id: int) -> float | None:
        """The request thread's CPU clock now, read from this thread (~1 µs); None, and no
        more reads for this request, when it cannot be read (the thread is gone, or no
        such clock here)."""
        try:
            clock = request.cpu_clock
            if clock is None:
                clock = request.cpu_clock = time.pthread_getcpuclockid(thread_id)
            return time.clock_gettime(clock)
        except (OSError, AttributeError, OverflowError):
            request.cpu_last = None
            return None

    def _stack(
        self,
        frame: types.FrameType | None,
        request: SampledRequest,
        walked: list[types.FrameType] | None = None,
    ) -> list[str]:
        """The identifiers of ``frame``'s stack, root first; the frames walked below the
        stem (innermost first) are appended to ``walked`` when given."""
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
            entry = codes.get(id(frame.f_code))
            stack.append(self._identifier(frame.f_code) if entry is None else entry[1])
            if walked is not None:
                walked.append(frame)
            frame = frame.f_back
        stack.reverse()
        return stack

    def _stem(self, request: SampledRequest) -> dict[int, tuple[types.FrameType, int]]:
        frames: list[types.FrameType] = []
        frame, request.anchor = request.anchor, None
        if request.anchor_in_plumbing:
            frame = _application_frame(frame)
        while frame is not None and len(frames) < _MAX_STACK_DEPTH:
            frames.append(frame)
            frame = frame.f_back
        frames.reverse()
        identifier = self._identifier
        request.start_call_stack = [identifier(frame.f_code) for frame in frames]
        # Frames that have returned since cannot appear in samples; those still running
        # can, and a sample's walk stops at the first of them.
        return {id(frame): (frame, index) for index, frame in enumerate(frames)}

    def _identifier(self, code: types.CodeType) -> str:
        entry = self._codes.get(id(code))
        if entry is None:
            if len(self._codes) >= _MAX_CACHED_CODES:
                self._codes.clear()
            entry = self._codes[id(code)] = (code, frame_identifier(code))
        return entry[1]


_SUSPENDING = (
    inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
) | inspect.CO_ITERABLE_COROUTINE
_PLUMBING = (f"{os.sep}opentelemetry{os.sep}", f"{os.sep}contextlib.py", _PACKAGE_DIR)
# id(code) -> (code, is it span-starting plumbing?); keyed by id as StackSampler._codes.
_verdicts: dict[int, tuple[types.CodeType, bool]] = {}
# The SDK's Tracer.start_span: two frames above the caller of a processor's on_start
# (SynchronousMultiSpanProcessor.on_start <- Span.start <- Tracer.start_span).
_START_SPAN_CODE: types.CodeType | None = getattr(
    getattr(SdkTracer, "start_span", None), "__code__", None
)


def stem_anchor(caller: types.FrameType | None) -> types.FrameType | None:
    """The frame from which the sampling thread can walk the stem of a profile started by
    ``caller``, at the first sample; found with as little walking as possible on the
    request's thread (a Python loop over frames cost ~0.6 µs a frame here).

    CPython links a frame object that is still referenced when its frame returns to its
    caller's frame object, so holding the anchor keeps the whole stem reachable, at no
    measurable cost to the request's thread, unless a suspended generator sits between
    the anchor and the application's frames: a suspended generator's frame has no caller
    (``f_back`` is None). When ``caller`` is a span processor's ``on_start`` caller, two
    frames below ``Tracer.start_span`` (none of the SDK's frames in between suspends), the
    anchor is the frame that called ``start_span`` when that frame does not suspend (the
    Flask, WSGI and Django instrumentations); else (``Tracer.start_as_current_span`` is a
    generator, and so may other span-starting plumbing be) the first frame above it that
    is not plumbing (OpenTelemetry, ``contextlib``, this package, any generator). For any
    other ``caller``, the first frame from ``caller`` up that is not plumbing. A generator
    further up that suspends before the first sample would still cut the stem short: the
    tree is then rooted higher up the thread's stack, nothing is lost.
    """
    if caller is None:
        return None
    tracer_frame = caller.f_back
    if tracer_frame is not None:
        tracer_frame = tracer_frame.f_back
    if tracer_frame is not None and tracer_frame.f_code is _START_SPAN_CODE:
        return _starter_of(tracer_frame)
    return _application_frame(caller)


def anchor_at_span_start(request: SampledRequest, depth: int) -> None:
    """Give ``request`` the anchor :func:`stem_anchor` would find from
    ``sys._getframe(depth + 1)`` (``depth`` frames above this function's caller), which
    is the caller of a span processor's ``on_start``, making as few frame objects on the
    request's thread as it can: each costs an allocation, and a copy of the frame when it
    returns while the object is held.

    ``sys._getframe(n)`` makes only the n-th frame's object, not those in between (the
    SDK's). When the span was started by a generator (``start_as_current_span``), the
    anchor is the generator's caller, and the sampling thread walks from there past the
    span-starting plumbing at the first sample (:attr:`SampledRequest.anchor_in_plumbing`),
    so that the request's thread does not walk it: the frame above, held, is linked to
    its caller by CPython when it returns."""
    try:
        tracer_frame = sys._getframe(depth + 3)
    except ValueError:  # not that deep: not called from Tracer.start_span
        tracer_frame = None
    if tracer_frame is not None and tracer_frame.f_code is _START_SPAN_CODE:
        starter = tracer_frame.f_back
        if starter is None:
            request.anchor = tracer_frame
        elif not starter.f_code.co_flags & _SUSPENDING:
            request.anchor = starter
        else:
            request.anchor = starter.f_back
            request.anchor_in_plumbing = True
        return
    request.anchor = stem_anchor(sys._getframe(depth + 1))


def _starter_of(tracer_frame: types.FrameType) -> types.FrameType | None:
    """The anchor of a profile whose span ``Tracer.start_span`` (``tracer_frame``) starts."""
    starter = tracer_frame.f_back
    if starter is None:
        return tracer_frame
    if not starter.f_code.co_flags & _SUSPENDING:
        return starter
    return _application_frame(starter)


def _application_frame(frame: types.FrameType | None) -> types.FrameType | None:
    """``frame`` or its first caller that is not span-starting plumbing (None if none)."""
    verdicts = _verdicts
    depth = 0
    while frame is not None and depth < _MAX_STACK_DEPTH:
        code = frame.f_code
        entry = verdicts.get(id(code))
        if entry is None:
            if len(verdicts) >= _MAX_CACHED_CODES:
                verdicts.clear()
            plumbing = bool(code.co_flags & _SUSPENDING) or any(
                part in code.co_filename for part in _PLUMBING
            )
            entry = verdicts[id(code)] = (code, plumbing)
        if not entry[1]:
            return frame
        frame = frame.f_back
        depth += 1
    return None


# identifier -> is it span-starting or -ending plumbing (see _trim_plumbing)?
_plumbing_identifiers: dict[str, bool] = {}


def _trim_plumbing(records: list[tuple[list[str], float]]) -> None:
    """Cut the span's own start and end out of the first and last of a native request's
    samples: the native reader samples whenever the tick is due, also in the SDK's
    ``start_span`` after the processor registered the request and in ``Span.end`` before
    it ended it (the Python thread, needing the GIL, hardly ever does). Their innermost
    span plumbing frames (:data:`_PLUMBING`: OpenTelemetry, contextlib, this package; and
    a ``[wait]`` on them) are cut, so that the time stays with the application frame that
    started or ended the span."""
    verdicts = _plumbing_identifiers
    for index in {0, len(records) - 1}:
        stack, elapsed = records[index]
        top = len(stack) - 1 if stack and stack[-1] == WAIT_FRAME else len(stack)
        cut = top
        while cut > 1:
            identifier = stack[cut - 1]
            plumbing = verdicts.get(identifier)
            if plumbing is None:
                if len(verdicts) >= _MAX_CACHED_CODES:
                    verdicts.clear()
                parts = identifier.split(IDENTIFIER_SEP, 2)
                plumbing = verdicts[identifier] = len(parts) > 1 and any(
                    part in parts[1] for part in _PLUMBING
                )
            if not plumbing:
                break
            cut -= 1
        if cut < top:
            records[index] = (stack[:cut], elapsed)


def frame_identifier(code: types.CodeType) -> str:
    """pyinstrument's frame info for ``code``: ``function\\x00file\\x00first_line``, plus
    ``\\x01c<Class>`` when the qualified name shows a class (pyinstrument reads ``self``)."""
    return identifier_of(
        code.co_name,
        code.co_filename,
        code.co_firstlineno,
        getattr(code, "co_qualname", code.co_name),
    )


def identifier_of(name: str, filename: str, first_line: int, qualname: str) -> str:
    """:func:`frame_identifier` from a code object's fields (the native reader copies them)."""
    identifier = f"{name}{IDENTIFIER_SEP}{filename}{IDENTIFIER_SEP}{first_line}"
    owner, _, _ = qualname.rpartition(".")
    if owner and not owner.endswith(">"):
        identifier += f"{ATTRIBUTES_SEP}{ATTRIBUTE_MARKER_CLASS_NAME}{owner}"
    return identifier


RUNNING, WAITING, UNSEEN = "running", "waiting", "unseen"
_FREE_GIL_LATENESS = 0.0004  # a tick this late or less found the GIL free (oversleep ~0.16 ms)


def thread_state(
    *, used: float, late: float, switch_interval: float, walk_cpu: float, walk_wall: float
) -> str:
    """What a sampled request's thread was doing when the sampling tick was due:
    :data:`RUNNING` (where its stack is now), :data:`WAITING` (off the CPU in the call its
    stack is in now: I/O, a sleep, a lock, the GIL) or :data:`UNSEEN` (computing in code
    that has returned since, before it blocked in the call its stack is in now).

    The sampling thread reads a stack only once it holds the GIL, and a thread running
    Python code gives the GIL up only when it blocks or after the interpreter's switch
    interval. So the stack is read when the tick was due only if no thread held the GIL
    then; otherwise at the holder's next blocking call (or switch interval), and whatever
    it ran from the due time until then is not on the stack. Taking the stack as the state
    at the due time would put a CPU burst shorter than the switch interval into the wait
    that ends it (a view computing 3 ms between 2 ms queries read as 100 % waiting).

    ``late``: seconds from the tick's due time to the GIL being taken (over a sleep's own
    oversleep: someone held the GIL); ``used``: the thread's CPU seconds since its
    previous sample; ``walk_cpu`` / ``walk_wall``: its CPU and the wall time while its
    stack was being read (the GIL held here: a thread computing meanwhile runs C code
    without the GIL)."""
    if late < _FREE_GIL_LATENESS:
        # Nobody held the GIL when the tick was due: the thread was not running Python.
        return RUNNING if walk_cpu > 0.3 * walk_wall else WAITING
    if used < 0.5 * late:
        return WAITING  # another thread held the GIL; this one was mostly off the CPU
    if late >= 0.9 * switch_interval:
        return RUNNING  # computing until the switch interval took the GIL from it
    return UNSEEN  # it computed from the due time on, then blocked where it is now


def _under_persisting_frame(
    stack: list[str],
    walked: list[types.FrameType] | None,
    previous: list[types.FrameType] | None,
) -> list[str]:
    """``stack`` cut below its deepest frame that was on the previous sample's stack too
    (the stem's top frame if none was), ending in :data:`CPU_FRAME`: the thread computed,
    from the tick's due time on, in code that has returned since, and all it ran since
    the previous sample ran under that frame. ``walked``: ``stack``'s frames below the
    stem, innermost first; ``previous``: the previous sample's."""
    depth = 0
    if walked:
        held = {id(frame) for frame in previous} if previous else set()
        for depth, frame in enumerate(walked):  # noqa: B007 (depth is used after)
            if id(frame) in held:
                break
        else:
            depth = len(walked)
    return [*stack[: len(stack) - depth], CPU_FRAME]


# A sample's last frame when its thread computed, from the tick's due time on, in code that
# had returned by the time its stack could be read (see thread_state): the time is its
# caller's, spent in code the sampler did not see. Named like WAIT_FRAME.
CPU_FRAME = f"[cpu]{IDENTIFIER_SEP}<built-in>{IDENTIFIER_SEP}0"

# The frame a sample ends in when the thread was mostly off the CPU since the previous
# one; named like pyinstrument's own pseudo-frames ([await], [out-of-context]), filed as
# a built-in, as the C function it stands for would be.
WAIT_FRAME = f"[wait]{IDENTIFIER_SEP}<built-in>{IDENTIFIER_SEP}0"

# A frame whose code object the native reader could not copy out (or past the 32,768
# distinct code objects it remembers).
UNKNOWN_FRAME = f"<unknown>{IDENTIFIER_SEP}<unknown>{IDENTIFIER_SEP}0"

_native_module: Any = None
_native_error: str | None = None


def native_reader() -> Any:
    """The native stack reader (``_native_sampler``), loaded and set up once; None where it
    is not built or cannot read this process's memory (:func:`native_unavailable_reason`)."""
    global _native_module, _native_error
    if _native_module is None and _native_error is None:
        try:
            from otel_pyinstrument_processor import _native_sampler  # type: ignore[attr-defined]

            _native_sampler.init(identifier_of, WAIT_FRAME, UNKNOWN_FRAME)
            _native_module = _native_sampler
        except ImportError as exc:
            _native_error = str(exc) or type(exc).__name__
            _logger.debug("pystrument: no native stack reader: %s", _native_error)
    return _native_module


def native_unavailable_reason() -> str | None:
    """Why :func:`native_reader` is None (None when it is available)."""
    return None if native_reader() is not None else _native_error


_shared: dict[str, StackSampler] = {}
_shared_lock = threading.Lock()


def _reset_shared_lock() -> None:
    # Another thread may have held the lock at fork: the child's copy would stay locked.
    global _shared_lock
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_shared_lock)


def shared_sampler(backend: str = "auto") -> StackSampler:
    """The process's sampler for ``backend`` (one of :data:`SAMPLER_BACKENDS`; ``auto``:
    native where available, else python), created on first use; its thread starts on the
    first request. Raises ValueError for ``native`` where it is not available."""
    if backend not in SAMPLER_BACKENDS:
        raise ValueError(f"sampler_backend must be one of {SAMPLER_BACKENDS}, got {backend!r}")
    native = None if backend == "python" else native_reader()
    if backend == "native" and native is None:
        raise ValueError(f"sampler_backend native is not available: {_native_error}")
    key = "python" if native is None else "native"
    with _shared_lock:
        sampler = _shared.get(key)
        if sampler is None:
            sampler = _shared[key] = StackSampler(native)
        return sampler
