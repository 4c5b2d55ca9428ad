"""The native stack reader (``_native_sampler.c``) on its own: what it reads of stacks that
are hard to read from another thread without the GIL.

Through :class:`StackSampler` (as the processor uses it); the processor-level behaviour of
both readers is in test_stack_sampler.py. Skipped where the extension is not built (only
CPython 3.11 on Linux builds it).
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from otel_pyinstrument_processor.stack_sampler import (
    WAIT_FRAME,
    StackSampler,
    frame_identifier,
    native_reader,
    native_unavailable_reason,
)

native = native_reader()
needs_native = pytest.mark.skipif(
    native is None, reason=f"no native reader: {native_unavailable_reason()}"
)

Records = list[tuple[list[str], float]]


def test_the_native_reader_is_there_where_it_is_built() -> None:
    # Built for CPython 3.11 on Linux (setup.py): there, a missing reader is a broken build
    # (or a machine that refuses process_vm_readv and /proc/self/mem), never a skip.
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        pytest.skip("the native reader is built for CPython 3.11 only")
    if not sys.platform.startswith("linux"):
        pytest.skip("the native reader is built on Linux only")
    assert native is not None, native_unavailable_reason()
    assert native.stats()["reader"] in ("process_vm_readv", "/proc/self/mem")


@pytest.fixture
def sampler() -> Iterator[StackSampler]:
    sampler = StackSampler(native)
    yield sampler
    sampler.release(sampler)
    assert native.stats()["active"] == 0


def sampled(sampler: StackSampler, work: Callable[[], object], interval: float = 0.002) -> Records:
    request = sampler.begin(sampler, interval, sys._getframe(), cpu_start=time.thread_time())
    try:
        work()
    finally:
        records = list(sampler.end(request))
    return records


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def names(stack: list[str]) -> list[str]:
    return [identifier.split("\x00")[0] for identifier in stack]


@needs_native
def test_identifiers_are_the_python_readers(sampler: StackSampler) -> None:
    class Report:
        def build(self) -> None:
            spin(0.03)

    records = sampled(sampler, Report().build)
    assert len(records) >= 5
    stack = next(stack for stack, _ in records if "build" in names(stack))
    at = names(stack).index("build")
    assert stack[at] == frame_identifier(Report.build.__code__)  # with its \x01c class
    assert stack[at - 1] == frame_identifier(sampled.__code__)
    assert stack[at + 1] == frame_identifier(spin.__code__)


@needs_native
def test_a_sample_is_waiting_exactly_when_the_thread_is_off_the_cpu(sampler: StackSampler) -> None:
    slept = [0.0]

    def work() -> None:
        for _ in range(4):
            spin(0.01)
            began = time.perf_counter()
            time.sleep(0.01)
            slept[0] += time.perf_counter() - began

    began = time.perf_counter()
    records = sampled(sampler, work)
    true_share = slept[0] / (time.perf_counter() - began)  # ~half; less on a loaded machine
    total = sum(elapsed for _, elapsed in records)
    waiting = sum(elapsed for stack, elapsed in records if stack[-1] == WAIT_FRAME)
    assert len(records) >= 20
    # Read at the due time, so only the phase of the ticks blurs it.
    assert abs(waiting / total - true_share) < 0.2, (waiting, total, true_share)
    running = [names(stack)[-1] for stack, _ in records if stack[-1] != WAIT_FRAME]
    waits = [names(stack)[-2] for stack, _ in records if stack[-1] == WAIT_FRAME]
    # time.sleep is C: its wait is under its caller. (A tick between the spin and the sleep
    # finds work() itself holding the GIL; on a loaded machine, one may find spin() waiting
    # for the GIL that another thread of the process took: a wait there too.)
    assert waits.count("work") >= 0.8 * len(waits), waits
    assert running.count("spin") >= 0.8 * len(running), running


def deep(depth: int, seconds: float) -> int:
    if depth:
        return deep(depth - 1, seconds) + 1
    spin(seconds)
    return 0


@needs_native
def test_deep_stacks_past_the_first_data_stack_chunk(sampler: StackSampler) -> None:
    # ~120 bytes a frame: 600 frames need more than the first 16 KiB chunk of the thread's
    # data stack, so part of the walk is read frame by frame outside the chunk copied.
    records = sampled(sampler, lambda: deep(600, 0.05))
    stacks = [names(stack) for stack, _ in records if names(stack)[-1] == "spin"]
    assert stacks
    for stack in stacks:
        assert stack.count("deep") == 601
        assert stack[stack.index("deep") - 1] == "<lambda>"


@needs_native
def test_generator_and_coroutine_frames_are_on_the_stack(sampler: StackSampler) -> None:
    def produce() -> Iterator[int]:
        for index in range(3):
            spin(0.01)
            yield index

    async def coroutine() -> None:
        spin(0.02)

    def work() -> None:
        assert list(produce()) == [0, 1, 2]
        with contextlib.suppress(StopIteration):
            coroutine().send(None)

    stacks = [names(stack) for stack, _ in sampled(sampler, work)]
    assert any(stack[-2:] == ["produce", "spin"] for stack in stacks)
    assert any(stack[-2:] == ["coroutine", "spin"] for stack in stacks)
    assert all("work" in stack for stack in stacks if stack[-1] == "spin")


@needs_native
def test_names_in_any_script_and_code_made_at_run_time(sampler: StackSampler) -> None:
    # Functions compiled while the process runs and freed after: a later code object may
    # take a freed one's address, and must not be named after it (checked at each sighting).
    seen: dict[str, int] = {}
    for index in range(40):
        name = f"made_{index}_計算" if index % 2 else f"made_{index}_ü"
        namespace: dict[str, object] = {"spin": spin}
        source = f"def {name}():\n    spin(0.004)\n"
        exec(compile(source, f"<generated {index}>", "exec"), namespace)
        function = namespace[name]
        for stack, _ in sampled(sampler, function, interval=0.001):  # type: ignore[arg-type]
            frames = names(stack)
            if frames[-1] == "spin":
                seen[frames[-2]] = seen.get(frames[-2], 0) + 1
                assert frames[-2] == name, frames
                assert stack[-2].split("\x00")[1] == f"<generated {index}>"
        del namespace, function
    assert len(seen) >= 30  # most were sampled (a 4 ms function at 1 ms)


@needs_native
def test_a_request_whose_thread_ended_without_end(sampler: StackSampler) -> None:
    # A thread that exits with its request still registered: its thread state is freed
    # under the reader, which must read nothing (not crash), and end() from another thread
    # still returns what was taken.
    requests = []

    def orphan() -> None:
        requests.append(
            sampler.begin(sampler, 0.001, sys._getframe(), cpu_start=time.thread_time())
        )
        spin(0.01)

    thread = threading.Thread(target=orphan)
    thread.start()
    thread.join()
    time.sleep(0.05)  # 50 ticks on a dead thread's state
    records = sampler.end(requests[0])
    # Only that thread's own stacks: in orphan(), or in the threading module's frames it
    # ran after it (the request was never ended) until it was gone.
    assert records and any("orphan" in names(stack) for stack, _ in records)
    files = ("threading.py", __file__, "stack_sampler.py")
    for stack, _ in records:
        frames = [frame for frame in stack if frame != WAIT_FRAME]
        assert names(frames)[0] == "_bootstrap", names(stack)  # the thread's root
        assert all(frame.split("\x00")[1].endswith(files) for frame in frames), names(stack)
    assert native.stats()["active"] == 0


@needs_native
def test_max_duration_stops_sampling(sampler: StackSampler) -> None:
    request = sampler.begin(sampler, 0.001, sys._getframe(), 0.02, cpu_start=time.thread_time())
    spin(0.08)
    records = sampler.end(request)
    assert request.stopped_early
    assert sum(elapsed for _, elapsed in records) <= 0.03


@needs_native
@pytest.mark.parametrize("reader", ["/proc/self/mem", "process_vm_readv"])
def test_either_way_of_reading_memory(sampler: StackSampler, reader: str) -> None:
    if not native.use_reader(reader):
        pytest.skip(f"{reader} cannot read here")
    try:
        assert native.stats()["reader"] == reader
        stacks = [names(stack) for stack, _ in sampled(sampler, lambda: spin(0.02))]
        assert stacks and all(stack[-2:] == ["<lambda>", "spin"] for stack in stacks)
    finally:
        native.use_reader("process_vm_readv") or native.use_reader("/proc/self/mem")


def leaf(value: int) -> int:
    return value * 2 + 1


def middle(value: int) -> int:
    return leaf(value) + leaf(value + 1)


def call_heavy(seconds: float) -> None:
    end = time.thread_time() + seconds
    total = 0
    while time.thread_time() < end:
        for value in range(200):
            total += middle(value)


@needs_native
def test_call_heavy_code_is_sampled_at_the_rate_with_whole_stacks(sampler: StackSampler) -> None:
    # A thread calling ~millions of small functions a second changes its innermost frames
    # while they are being read: the samples must still come at the interval (none dropped
    # for the churn), each a stack that was this thread's (no frame of another place).
    failed_before = native.stats()["failed_reads"]
    records = sampled(sampler, lambda: call_heavy(0.2), interval=0.005)
    assert len(records) >= 20  # ~40 at 5 ms; a loaded machine delays the thread's ticks
    test = sys._getframe().f_code.co_name
    for stack, _ in records:
        frames = names(stack)
        mine = frames[frames.index(test) + 1 :]
        if "call_heavy" in mine:
            assert mine[:3] == ["sampled", "<lambda>", "call_heavy"], frames
            # (["leaf"] right under call_heavy: a read torn as middle() returned and the
            # next leaf() was pushed where it had been; ~1 sample in 40 here.)
            assert mine[3:] in ([], ["middle"], ["leaf"], ["middle", "leaf"]), frames
        else:  # read as the sampler began or ended the request
            assert mine[0] == "sampled" and len(mine) <= 3, frames
    assert native.stats()["failed_reads"] - failed_before <= len(records) // 10


def test_the_span_start_and_end_are_cut_from_the_first_and_last_samples() -> None:
    from otel_pyinstrument_processor.stack_sampler import _trim_plumbing

    def frame(name: str, file: str) -> str:
        return f"{name}\x00{file}\x001"

    view = [frame("serve", "/srv/server.py"), frame("view", "/app/views.py")]
    sdk_end = frame("end", "/venv/site-packages/opentelemetry/sdk/trace/__init__.py")
    records = [
        ([*view, frame("start_span", "/venv/opentelemetry/sdk/trace/__init__.py")], 0.01),
        ([*view, frame("query", "/app/db.py"), WAIT_FRAME], 0.01),
        ([*view, WAIT_FRAME], 0.01),
    ]
    _trim_plumbing(records)
    assert records[0] == (view, 0.01)  # the SDK's frames cut: the time stays with the view
    assert records[1][0][-1] == WAIT_FRAME  # a sample in between is never touched
    assert records[2] == ([*view, WAIT_FRAME], 0.01)  # the view's own wait stays a wait
    records = [([*view, sdk_end, WAIT_FRAME], 0.01)]
    _trim_plumbing(records)
    assert records == [(view, 0.01)]  # a wait inside the span's end is the end's


def recurse(depth: int) -> int:
    if depth <= 0:
        return sum(value * value for value in range(50))
    if depth % 7 == 0:
        with contextlib.suppress(ValueError):
            raise ValueError(depth)
    return recurse(depth - 1) + 1


def churn(seed: int, until: float, sampler: StackSampler, failures: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        while time.monotonic() < until:
            request = sampler.begin(sampler, 0.0005, sys._getframe(), cpu_start=time.thread_time())
            for _ in range(rng.randint(1, 20)):
                choice = rng.random()
                if choice < 0.4:
                    recurse(rng.randint(1, 300))  # frames pushed and popped by the thousand
                elif choice < 0.7:
                    sum(recurse(depth % 30) for depth in range(rng.randint(1, 40)))
                elif choice < 0.8:
                    time.sleep(0.0003)
                else:
                    namespace: dict[str, object] = {}
                    exec(
                        compile(
                            "def made(x):\n    return [x * i for i in range(200)]\n",
                            "<made>",
                            "exec",
                        ),
                        namespace,
                    )
                    namespace["made"](3)  # type: ignore[operator]
            for stack, elapsed in sampler.end(request):
                assert elapsed >= 0 and stack and all(isinstance(frame, str) for frame in stack)
                assert "churn" in names(stack), names(stack)
    except BaseException as exc:  # pragma: no cover - reported by the test
        failures.append(exc)


@needs_native
def test_stacks_read_under_churn_from_many_threads(sampler: StackSampler) -> None:
    # Six threads push and pop frames (deep recursion, generators, exceptions, code made
    # and freed) while the reader samples each every 0.5 ms: torn reads are everywhere, and
    # none may crash the process or yield a frame that was not the thread's. (A 150 s run
    # of this: 1.6 million samples, 434 reads dropped, no crash.)
    failures: list[BaseException] = []
    until = time.monotonic() + 3.0
    threads = [
        threading.Thread(target=churn, args=(seed, until, sampler, failures)) for seed in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[:3]
    assert native.stats()["samples"] > 1000
