"""The pyinstrument mode's profile of one request: a subscriber of pyinstrument's call hook.

pyinstrument samples a thread through a per-thread ``StackSampler`` that a C profile function
(``setstatprofile``) calls back every ``interval`` at a call or return event; its
``Profiler`` subscribes to that sampler and, when stopped, wraps the samples in a
``Session``. Per request the Profiler also reads the process CPU clock twice, walks the
caller's stack through pyinstrument's frame-info function (which builds a locals dict for
every method frame: ~2 µs a frame, 30-70 µs for a web server's stack) and copies
``sys.path`` and the interpreter prefixes into the Session. :class:`HookProfile` subscribes
to the same sampler directly and keeps what the processor uses: the samples, also
aggregated into a tree as they come (:class:`~tree_builder.StackAggregator`), the code
objects of the starting frame and its callers (the tree's stem), the wall-clock duration
and the ``max_duration`` count-down.

Samples are exactly pyinstrument's: the same stacks, and in strict async mode the same
rewriting of samples taken outside the request's context (``Profiler._sampler_saw_call_stack``
in pyinstrument 5: time awaited shows as ``[await]`` under the awaiting coroutine's stack,
other time outside the context as ``[out-of-context]``).
"""

from __future__ import annotations

import math
import time
import types
from typing import Any

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER, OUT_OF_CONTEXT_FRAME_IDENTIFIER
from pyinstrument.frame_info import IDENTIFIER_SEP
from pyinstrument.stack_sampler import get_stack_sampler

from otel_pyinstrument_processor.tree_builder import StackAggregator

_MAX_STACK_DEPTH = 10_000  # a runaway recursion's stem is cut here (pyinstrument has none)
_MAX_CACHED_CODES = 20_000


class HookProfile:
    """Samples of the calling thread (or, with ``strict``, of its asyncio context) taken by
    pyinstrument's call hook between :meth:`start` and :meth:`stop`, both on that thread.

    Samples are kept as pyinstrument's frame records (stack root first, elapsed seconds);
    once ``aggregate_after`` seconds of samples have come (None: never), they are also
    aggregated into :attr:`aggregator` as they come, so that stopping only has to finish
    the tree. After ``max_duration`` seconds of samples, further samples are dropped and
    :attr:`stopped_early` is set (a runaway request keeps a bounded profile).
    """

    __slots__ = (
        "aggregate_after",
        "aggregator",
        "elapsed",
        "ignoring",
        "interval",
        "records",
        "remaining",
        "start_codes",
        "started",
        "stopped",
        "stopped_early",
        "strict",
        "use_timing_thread",
    )

    def __init__(
        self,
        *,
        interval: float,
        strict: bool,
        max_duration: float | None,
        use_timing_thread: bool | None,
        aggregate_after: float | None = 0.0,
    ) -> None:
        self.interval = interval
        self.strict = strict
        self.use_timing_thread = use_timing_thread
        self.remaining = math.inf if max_duration is None else max_duration
        self.aggregate_after = aggregate_after
        self.aggregator: StackAggregator | None = None
        self.records: list[tuple[list[str], float]] = []
        self.elapsed = 0.0
        self.stopped_early = False
        self.ignoring = False
        self.stopped = 0.0
        self.start_codes: list[types.CodeType] = []
        self.started = 0.0

    def start(self, caller: types.FrameType | None) -> None:
        """Subscribe to this thread's sampler; ``caller`` is the frame that starts the
        profile (it and its callers form the stem that :meth:`start_call_stack` returns).

        Raises what pyinstrument raises, e.g. RuntimeError when a strict profile already
        runs in this context."""
        # Only the code objects: their identifiers are made at stop, and only when the
        # profile has samples (a dict lookup each, cached per process). Every frame here is
        # still running, so the chain is whole (suspended generators would cut it later).
        codes = self.start_codes
        frame = caller
        while frame is not None and len(codes) < _MAX_STACK_DEPTH:
            codes.append(frame.f_code)
            frame = frame.f_back
        codes.reverse()
        self.started = time.perf_counter()
        # A bound method made per call, not kept on self (that would be a reference cycle,
        # leaving each request's samples to the cyclic GC): the sampler finds its subscriber
        # by equality, which for bound methods is the same object and function.
        get_stack_sampler().subscribe(
            self.saw_call_stack,
            desired_interval=self.interval,
            use_async_context=self.strict,
            use_timing_thread=self.use_timing_thread,
        )

    def stop(self) -> list[tuple[list[str], float]]:
        """Unsubscribe (on the thread that started the profile) and return the samples.

        Raises RuntimeError when called on another thread (pyinstrument's sampler is per
        thread: there this profile is not subscribed)."""
        try:
            get_stack_sampler().unsubscribe(self.saw_call_stack)
        except Exception as exc:  # pyinstrument's StackSampler.SubscriberNotFound
            raise RuntimeError("a profile must be stopped on the thread that started it") from exc
        self.stopped = time.perf_counter()
        self.ignoring = True
        return self.records

    def abandon(self) -> None:
        """Drop every further sample (the profile ended on another thread: it can only be
        unsubscribed on its own, later, and its samples are of no use)."""
        self.ignoring = True
        self.records = []
        self.aggregator = None

    @property
    def duration(self) -> float:
        """Wall-clock seconds from :meth:`start` to :meth:`stop`."""
        return max(0.0, self.stopped - self.started)

    def start_call_stack(self) -> list[str]:
        """The frame that started the profile and its callers as frame identifiers, root
        first, under the thread's own frame: pyinstrument's ``Session.start_call_stack``
        up to the attributes (class name, line) the stem trimming ignores. Empty when the
        profile has no sample."""
        if not self.records or not self.records[0][0]:
            return []
        stack = [self.records[0][0][0]]  # the thread's frame, as the samples have it
        identifiers = _IDENTIFIERS
        for code in self.start_codes:
            identifier = identifiers.get(code)
            if identifier is None:
                if len(identifiers) >= _MAX_CACHED_CODES:
                    identifiers.clear()
                identifier = identifiers[code] = IDENTIFIER_SEP.join(
                    (code.co_name, code.co_filename, str(code.co_firstlineno))
                )
            stack.append(identifier)
        return stack

    def saw_call_stack(self, call_stack: list[str], elapsed: float, async_state: Any) -> None:
        """Take one sample: pyinstrument's sampler calls this on the profiled thread with
        the stack (root first), the seconds since its previous sample and, in strict mode,
        whether the sample was taken in the request's context."""
        # Every `interval` at most: this is the per-sample cost, keep it lean.
        if self.ignoring:
            return
        remaining = self.remaining = self.remaining - elapsed
        if remaining < 0:
            # The sampler may only be unsubscribed from outside its own callback: from here
            # on each sample costs this test only.
            self.stopped_early = self.ignoring = True
            return
        if async_state is not None:
            state = async_state.state
            if state == "out_of_context_awaited":
                call_stack = [*async_state.info, AWAIT_FRAME_IDENTIFIER]
            elif state == "out_of_context_unknown":
                call_stack = [*async_state.info, OUT_OF_CONTEXT_FRAME_IDENTIFIER]
        records = self.records
        records.append((call_stack, elapsed))
        aggregator = self.aggregator
        if aggregator is not None:
            aggregator.add(call_stack, elapsed)
            return
        aggregate_after = self.aggregate_after
        if aggregate_after is not None:
            self.elapsed += elapsed
            if self.elapsed >= aggregate_after:
                # Old enough for its tree to be kept (keep-if-slow): catch up, then follow.
                aggregator = self.aggregator = StackAggregator()
                aggregator.add_all(records)


_IDENTIFIERS: dict[types.CodeType, str] = {}
