"""HookProfile against pyinstrument's own Profiler: same samples, same trees, same async rules.

pyinstrument's per-thread sampler takes a timer function; with a fake clock that only moves
when the code under test says so, samples fall at the same events in every run, so a run
through pyinstrument's Profiler and a run through HookProfile are compared sample for sample.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator

import pytest
from pyinstrument import Profiler
from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER, OUT_OF_CONTEXT_FRAME_IDENTIFIER
from pyinstrument.session import Session
from pyinstrument.stack_sampler import get_stack_sampler

from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor.active_profile import StoppedProfile
from otel_pyinstrument_processor.calltree import CallTreeNode, iter_nodes
from otel_pyinstrument_processor.hook_profile import HookProfile
from otel_pyinstrument_processor.processor_stats import ProcessorStats, RateLimitedLog
from otel_pyinstrument_processor.profile_attributes import ProfileAttributes
from otel_pyinstrument_processor.request_metrics import RequestMetrics
from otel_pyinstrument_processor.tree_builder import tree_from_aggregator, tree_from_frame_records
from otel_pyinstrument_processor.wire import DEFAULT_MAX_BYTES

INTERVAL = 0.001


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    sampler = get_stack_sampler()
    fake = FakeClock()
    sampler.timer_func = fake
    yield fake
    sampler.timer_func = None


class Shop:
    def checkout(self, clock: FakeClock) -> int:
        count = 0
        for _ in range(4):
            clock.advance(0.0012)
            count += self.price(clock)
        clock.advance(0.0021)
        return count + total(clock)

    def price(self, clock: FakeClock) -> int:
        clock.advance(0.0017)
        return len("price")

    @classmethod
    def discount(cls, clock: FakeClock) -> int:
        clock.advance(0.0013)
        return abs(-1)


def total(clock: FakeClock) -> int:
    clock.advance(0.0011)
    return sum([1, 2]) + Shop.discount(clock)


def handle_request(clock: FakeClock) -> int:
    return Shop().checkout(clock)


def rows(tree: CallTreeNode | None) -> list[tuple[int, str, str, int, float, float, int]]:
    assert tree is not None
    return [
        (
            depth,
            n.function,
            n.file,
            n.line,
            round(n.total_time, 9),
            round(n.self_time, 9),
            n.sample_count,
        )
        for n, depth in iter_nodes(tree)
    ]


def profile_both(clock: FakeClock, caller: types.FrameType) -> tuple[HookProfile, Session]:
    """handle_request profiled by pyinstrument's Profiler and by a HookProfile at once:
    both subscribe to this thread's sampler, so each sample goes to both (the fake clock
    does not move between the subscriptions)."""
    profiler = Profiler(interval=INTERVAL, async_mode="disabled", use_timing_thread=False)
    hook = HookProfile(interval=INTERVAL, strict=False, max_duration=None, use_timing_thread=False)
    profiler.start(caller_frame=caller)
    hook.start(caller)
    handle_request(clock)
    hook.stop()
    return hook, profiler.stop()


def test_same_samples_records_and_tree_as_pyinstruments_profiler(clock: FakeClock) -> None:
    hook, session = profile_both(clock, sys._getframe())
    records = hook.records

    assert len(records) >= 8
    assert records == session.frame_records
    functions = {info.split("\x00")[0] for stack, _ in records for info in stack}
    assert {"checkout", "price", "discount", "total"} <= functions
    # The stem, up to the attributes the trimming ignores (class name, line).
    assert [info.split("\x01")[0] for info in hook.start_call_stack()] == [
        info.split("\x01")[0] for info in session.start_call_stack
    ]
    assert hook.aggregator is not None and hook.aggregator.samples == len(records)
    for min_share in (0.0, 0.05):
        theirs = tree_from_frame_records(session.frame_records, session.start_call_stack, min_share)
        ours = tree_from_aggregator(hook.aggregator, hook.start_call_stack(), min_share)
        assert rows(ours) == rows(theirs)
    tree = tree_from_aggregator(hook.aggregator, hook.start_call_stack())
    assert tree is not None and tree.function == sys._getframe().f_code.co_name
    assert {"Shop.checkout", "Shop.price", "Shop.discount"} <= {
        n.function for n, _ in iter_nodes(tree)
    }


def test_the_span_attributes_are_the_same_as_from_a_pyinstrument_session(
    clock: FakeClock,
) -> None:
    hook, session = profile_both(clock, sys._getframe())
    records = hook.records
    to_attributes = ProfileAttributes(
        min_share=0.005,
        slow_threshold=0.0,
        track_memory=False,
        stats=ProcessorStats(),
        log=RateLimitedLog(logging.getLogger(__name__)),
    )
    prefixes = tuple(session.sys_prefixes)

    def attributes_of(stopped: StoppedProfile) -> dict[str, object]:
        return to_attributes.of(
            stopped, RequestMetrics(track_memory=False), [], lambda: DEFAULT_MAX_BYTES
        )

    from_session = attributes_of(
        StoppedProfile(
            session.frame_records, session.start_call_stack, 0.02, INTERVAL, False, prefixes, None
        )
    )
    from_hook = attributes_of(
        StoppedProfile(
            records, hook.start_call_stack(), 0.02, INTERVAL, False, prefixes, None, hook.aggregator
        )
    )
    assert from_hook[attrs.PROFILE_TREE] == from_session[attrs.PROFILE_TREE]
    assert from_hook == from_session


async def _other_task(clock: FakeClock, started: asyncio.Event) -> None:
    await started.wait()
    other_tasks_work(clock)


def other_tasks_work(clock: FakeClock) -> int:
    for _ in range(5):
        clock.advance(0.0015)
        len("other")
    return 0


async def _request(
    clock: FakeClock, start: Callable[[types.FrameType], None], started: asyncio.Event
) -> None:
    start(sys._getframe())
    request_work(clock)
    started.set()
    await asyncio.sleep(0.001)  # the other task runs while this one awaits
    request_work(clock)


def request_work(clock: FakeClock) -> int:
    for _ in range(3):
        clock.advance(0.0014)
        len("request")
    return 0


def _run_strict(clock: FakeClock, start: Callable[[types.FrameType], None]) -> None:
    async def main() -> None:
        started = asyncio.Event()
        other = asyncio.create_task(_other_task(clock, started))
        await asyncio.create_task(_request(clock, start, started))
        await other

    asyncio.run(main())


def test_strict_async_mode_records_what_pyinstruments_strict_profiler_records(
    clock: FakeClock,
) -> None:
    # Two runs of the same program on the fake clock, from the same line: one profiled by
    # pyinstrument's Profiler in strict mode, one by HookProfile; the samples fall at the
    # same events.
    profiler = Profiler(interval=INTERVAL, async_mode="strict", use_timing_thread=False)
    hook = HookProfile(interval=INTERVAL, strict=True, max_duration=None, use_timing_thread=False)

    def profiler_records() -> list[tuple[list[str], float]]:
        # Stopped on this thread, in the main context: unsubscribes all the same.
        return profiler.stop().frame_records

    runs = []
    for start, stop in (
        (lambda frame: profiler.start(caller_frame=frame), profiler_records),
        (hook.start, hook.stop),
    ):
        _run_strict(clock, start)
        runs.append(stop())
    theirs, records = runs

    assert len(records) >= 5
    assert records == theirs
    leaves = [stack[-1] for stack, _ in records]
    assert AWAIT_FRAME_IDENTIFIER in leaves  # time awaited, under the awaiting coroutine
    assert not any("other_tasks_work" in info for stack, _ in records for info in stack)
    assert any("request_work" in info for stack, _ in records for info in stack)
    awaited = next(stack for stack, _ in records if stack[-1] == AWAIT_FRAME_IDENTIFIER)
    assert awaited[-2].startswith("sleep\x00")  # awaited asyncio.sleep ...
    assert awaited[-3].startswith("_request\x00")  # ... in the request's coroutine


def test_out_of_context_samples_are_rewritten_as_pyinstrument_does() -> None:
    # The three async states pyinstrument's sampler hands a strict subscriber.
    from pyinstrument.profiler import ActiveProfilerSession
    from pyinstrument.stack_sampler import AsyncState

    stack = ["MainThread\x00<thread>\x001", "handler\x00app.py\x001"]
    awaiting = ["MainThread\x00<thread>\x001", "view\x00app.py\x005"]
    samples = [
        (stack, 0.001, AsyncState("in_context")),
        (["other"], 0.002, AsyncState("out_of_context_awaited", info=awaiting)),
        (["other"], 0.003, AsyncState("out_of_context_unknown", info=stack)),
        (stack, 0.004, None),
    ]
    profiler = Profiler(async_mode="strict")
    profiler._active_session = ActiveProfilerSession(0.0, 0.0, [], "test", INTERVAL)
    hook = HookProfile(interval=INTERVAL, strict=True, max_duration=None, use_timing_thread=False)
    for call_stack, elapsed, state in samples:
        profiler._sampler_saw_call_stack(call_stack, elapsed, state)
        hook.saw_call_stack(call_stack, elapsed, state)
    assert hook.records == profiler._active_session.frame_records
    assert hook.records[1][0] == [*awaiting, AWAIT_FRAME_IDENTIFIER]
    assert hook.records[2][0] == [*stack, OUT_OF_CONTEXT_FRAME_IDENTIFIER]


def test_max_duration_keeps_the_first_samples_and_says_so(clock: FakeClock) -> None:
    hook = HookProfile(interval=INTERVAL, strict=False, max_duration=0.005, use_timing_thread=False)
    hook.start(sys._getframe())
    handle_request(clock)  # ~0.017 s of fake time
    records = hook.stop()
    assert hook.stopped_early
    assert 0 < sum(elapsed for _, elapsed in records) <= 0.005
    assert hook.aggregator is not None and hook.aggregator.samples == len(records)


def test_aggregation_waits_for_the_keep_if_slow_threshold(clock: FakeClock) -> None:
    slow = HookProfile(
        interval=INTERVAL,
        strict=False,
        max_duration=None,
        use_timing_thread=False,
        aggregate_after=0.01,
    )
    slow.start(sys._getframe())
    request_work(clock)  # ~0.004 s: under the threshold, nothing aggregated
    assert slow.records and slow.aggregator is None
    handle_request(clock)
    records = slow.stop()
    assert slow.aggregator is not None and slow.aggregator.samples == len(records)

    never = HookProfile(
        interval=INTERVAL,
        strict=False,
        max_duration=None,
        use_timing_thread=False,
        aggregate_after=None,
    )
    never.start(sys._getframe())
    handle_request(clock)
    assert never.stop() and never.aggregator is None


def test_stop_on_another_thread_is_refused_and_abandon_drops_later_samples(
    clock: FakeClock,
) -> None:
    hook = HookProfile(interval=INTERVAL, strict=False, max_duration=None, use_timing_thread=False)
    hook.start(sys._getframe())
    request_work(clock)
    failures: list[BaseException] = []

    def stop_elsewhere() -> None:
        try:
            hook.stop()
        except RuntimeError as exc:
            failures.append(exc)

    worker = threading.Thread(target=stop_elsewhere)
    worker.start()
    worker.join()
    assert len(failures) == 1
    hook.abandon()
    handle_request(clock)
    assert hook.records == [] and hook.aggregator is None
    hook.stop()  # on its own thread it unsubscribes
    assert not any(s.target == hook.saw_call_stack for s in get_stack_sampler().subscribers)
