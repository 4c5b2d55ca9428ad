"""The sampling-thread profiler mode (``profiler_mode="sampler"``) with the real SDK.

Every test runs with each stack reader: the native thread (``_native_sampler``; skipped
where it is not built) and the Python sampling thread (the fallback), except those about
one reader's own workings."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from otel_pyinstrument_processor import (
    ConfigError,
    ProfilerConfig,
    PyinstrumentSpanProcessor,
    stack_sampler,
)
from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor import processor as processor_module
from otel_pyinstrument_processor.active_profile import ProfileModes, StoppedProfile
from otel_pyinstrument_processor.profile_attributes import ProfileAttributes
from otel_pyinstrument_processor.stack_sampler import (
    CPU_FRAME,
    RUNNING,
    UNSEEN,
    WAIT_FRAME,
    WAITING,
    StackSampler,
    frame_identifier,
    native_reader,
    shared_sampler,
    thread_state,
)
from tests.unit.test_processor import (
    Harness,
    assert_two_concurrent_requests_see_only_their_own_frames,
    busy_alpha,
    busy_reporting_function,
    find,
    functions,
    tree_of,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pystrument-sampler"]


@pytest.fixture(autouse=True, params=["native", "python"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stack reader the processors of the test use (``sampler_backend: auto`` picks
    the native one where it loads: hidden for the Python one)."""
    if request.param == "native":
        if native_reader() is None:
            pytest.skip(f"no native reader: {stack_sampler.native_unavailable_reason()}")
    else:
        monkeypatch.setattr(stack_sampler, "native_reader", lambda: None)
    return str(request.param)


def python_reader_only(backend: str) -> None:
    if backend != "python":
        pytest.skip("about the Python sampling thread's own workings")


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=0.005))
    yield h
    h.provider.shutdown()


def test_sampler_tree_shows_the_slow_function_and_the_sleep(harness: Harness) -> None:
    with harness.tracer.start_as_current_span("GET /report", kind=SpanKind.SERVER):
        busy_reporting_function()
        time.sleep(0.1)
    span = harness.spans()["GET /report"]
    assert span.attributes[attrs.PROFILE_INTERVAL] == 0.005
    assert span.attributes[attrs.PROFILE_SAMPLE_COUNT] >= 5
    duration = span.attributes[attrs.PROFILE_DURATION]
    tree = tree_of(span)
    busy = find(tree, "busy_reporting_function")
    assert busy.file == __import__("tests.unit.test_processor").unit.test_processor.__file__
    # Wall-clock samples: the spin and the sleep each get a plausible share. A thread
    # sampler sees Python frames only: the sleep (a C function) shows as a [wait] frame
    # under its caller, the thread's CPU clock having stood still meanwhile.
    # A sample's elapsed time goes to the stack seen when it is taken, so each boundary of the
    # 60 ms spin can shift by one interval — and on a loaded 2-core machine the sampler thread
    # is starved into longer intervals (seen: 5 samples, 54 ms). Half the spin is the floor.
    assert busy.total_time >= 0.03
    assert busy.total_time <= tree.total_time - 0.08
    assert tree.function == "test_sampler_tree_shows_the_slow_function_and_the_sleep"
    waits = [child for child in tree.children if child.function == "[wait]"]
    assert waits and waits[0].file == "<built-in>" and waits[0].total_time >= 0.08
    assert tree.total_time == pytest.approx(duration, abs=0.03)
    assert not any("opentelemetry" in n.file for n in _nodes(tree))
    assert harness.processor.stats.profiles_attached == 1


def _nodes(tree):
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def spin_cpu(seconds: float) -> None:
    """Spin ``seconds`` of this thread's CPU time, then on until the sampler has taken at
    least two samples of this thread's request (at most 10 s more).

    CPU time, so a loaded machine cannot starve the spin of samples. With two threads
    spinning under the GIL, the sampling thread competes with both for it, and on a loaded
    CI machine it once lost every hand-off of a 200 ms request (0 samples). The test is
    about whose frames land in which tree, not about the sampler's share of the GIL.
    """
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    request = shared_sampler().request_on(threading.get_ident())
    give_up = time.monotonic() + 10.0
    while request is not None and len(request.records) < 2 and time.monotonic() < give_up:
        pass


def cpu_alpha() -> None:
    spin_cpu(0.1)


def cpu_beta() -> None:
    spin_cpu(0.1)


def test_concurrent_requests_on_two_threads_get_only_their_own_frames(harness: Harness) -> None:
    assert_two_concurrent_requests_see_only_their_own_frames(harness, cpu_alpha, cpu_beta)


def test_thread_starts_on_the_first_profiled_span_and_stops_on_shutdown(backend: str) -> None:
    sampler = shared_sampler()
    assert sampler.backend == backend
    assert sampler_threads() == []  # every earlier test shut its processor down
    assert sampler.running is False
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=0.005))
    with h.tracer.start_as_current_span("not profiled", kind=SpanKind.INTERNAL):
        pass
    assert sampler.running is False
    # The native reader's thread is not a Python thread: threading does not list it.
    python_threads = 1 if backend == "python" else 0
    with h.tracer.start_as_current_span("req", kind=SpanKind.SERVER):
        assert len(sampler_threads()) == python_threads
        assert sampler.running is True
        busy_alpha()
    assert len(sampler_threads()) == python_threads  # idle between requests, not restarted
    assert sampler.running is True
    h.provider.shutdown()
    assert sampler_threads() == []
    assert sampler.running is False


def test_a_begin_during_release_leaves_one_sampling_thread(backend: str) -> None:
    """release() lets go of the lock before it joins the thread: a begin() in that window
    starts a new thread; the old one must end rather than sample beside it."""
    python_reader_only(backend)
    sampler = StackSampler()
    first, second = object(), object()
    request = sampler.begin(first, 0.005, sys._getframe())
    old = sampler._thread
    sampler.end(request)
    with sampler._lock:  # what release() has done when it lets go of the lock to join
        sampler._users.clear()
        sampler._stopping = True
        sampler._thread = None
    request = sampler.begin(second, 0.005, sys._getframe())  # a request starts right then
    try:
        assert old is not None
        old.join(timeout=5)
        assert not old.is_alive()
        assert sampler.running and sampler._thread is not old
    finally:
        sampler.end(request)
        sampler.release(second)
    assert not sampler.running


def test_a_request_ended_before_the_thread_takes_it_in_is_never_sampled(backend: str) -> None:
    # begin() only queues the request; end() before the next tick needs no lock, and the
    # sampling thread must then drop it unsampled (and let go of its frames).
    python_reader_only(backend)
    sampler = StackSampler()
    owner = object()
    request = sampler.begin(owner, 0.005, sys._getframe())
    try:
        assert sampler.request_on(threading.get_ident()) is request
        assert not sampler.end(request)
        assert sampler.request_on(threading.get_ident()) is None
        assert request.anchor is None
        give_up = time.monotonic() + 10.0
        while sampler._pending and time.monotonic() < give_up:
            time.sleep(0.005)
        time.sleep(0.02)  # a few more ticks
        assert sampler._pending == {} and sampler._requests == {}
        assert not request.records and request.seen
    finally:
        sampler.release(owner)


THREAD_STEM = ["_bootstrap", "_bootstrap_inner", "run", "serve"]
SERVE_CALLS = {"uniform", "begin", "__init__", "add", "end", "_ended_native", "[wait]", "[cpu]"}


def test_no_sample_lands_after_end_returns_under_concurrent_requests(backend: str) -> None:
    """Eight threads begin and end requests back to back while the sampler ticks every
    millisecond: whatever end() returned is final (the lock-free path must not let a
    sampling pass in progress add a sample afterwards), and nothing stays registered. For
    the native reader, also: stacks read while their threads change them are never torn
    into frames of another thread or garbage."""
    sampler = StackSampler(native_reader() if backend == "native" else None)
    owner = object()
    finished: list[tuple[object, int]] = []
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            for _ in range(300):
                request = sampler.begin(owner, 0.001, sys._getframe())
                end = time.perf_counter() + random.uniform(0, 0.002)
                while time.perf_counter() < end:
                    pass
                records = sampler.end(request)
                finished.append((request, len(records)))
                for stack, _elapsed in records:
                    names = [identifier.split("\x00")[0] for identifier in stack]
                    # The thread's frames, or what serve() calls (a stack read as it
                    # runs random.uniform or the sampler's begin or end).
                    if names[:4] != THREAD_STEM or not set(names[4:]) <= SERVE_CALLS:
                        raise AssertionError(f"a stack not of this request: {names}")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # GIL hand-offs inside sampling passes, not only between
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        time.sleep(0.05)  # the thread's next passes drop the ended requests
        assert not failures
        assert len(finished) == 8 * 300
        assert sum(count for _, count in finished) > 0  # the sampler did sample some
        if backend == "python":
            assert all(len(request.records) == count for request, count in finished)
            with sampler._lock:
                assert sampler._requests == {} and sampler._pending == {}
        else:
            assert sampler._native.stats()["active"] == 0
    finally:
        sys.setswitchinterval(switch_interval)
        sampler.release(owner)
    assert not sampler.running


def test_span_ended_on_another_thread_keeps_its_samples(harness: Harness) -> None:
    span = harness.tracer.start_span("req", kind=SpanKind.SERVER)
    spin_cpu(0.05)  # on until sampled: a starved sampling thread once took 1 sample, late
    ender = threading.Thread(target=span.end)
    ender.start()
    ender.join()
    assert "spin_cpu" in functions(tree_of(harness.spans()["req"]))


def test_max_trace_duration_stops_sampling() -> None:
    h = Harness(
        PyinstrumentSpanProcessor(
            profiler_mode="sampler", sampler_interval=0.002, max_trace_duration=0.02
        )
    )
    try:
        with h.tracer.start_as_current_span("runaway", kind=SpanKind.SERVER):
            busy_alpha()
        attributes = h.spans()["runaway"].attributes
        assert attributes[attrs.PROFILE_STOPPED_EARLY] is True
        # Only samples within the first 20 ms were kept (none if the sampler was late: on a
        # loaded machine its first tick came after the deadline, and a profile without a
        # sample carries no duration).
        assert attributes[attrs.PROFILE_SAMPLE_COUNT] <= 10
        if attributes[attrs.PROFILE_SAMPLE_COUNT]:
            assert attributes[attrs.PROFILE_DURATION] >= 0.05
    finally:
        h.provider.shutdown()


def test_asyncio_requests_still_use_pyinstrument(harness: Harness) -> None:
    async def handler() -> None:
        with harness.tracer.start_as_current_span("async", kind=SpanKind.SERVER):
            busy_alpha()
            await asyncio.sleep(0.01)

    asyncio.run(handler())
    span = harness.spans()["async"]
    assert span.attributes[attrs.PROFILE_INTERVAL] == 0.001  # pyinstrument's, not 0.005
    assert "busy_alpha" in functions(tree_of(span))


def test_identifiers_match_pyinstrument_for_methods() -> None:
    class Report:
        def render(self) -> str:
            return frame_identifier(sys._getframe().f_code)

    identifier = Report().render()
    name, file, line = identifier.split("\x01")[0].split("\x00")
    assert (name, file) == ("render", __file__)
    assert int(line) > 0
    assert identifier.endswith("\x01c" + Report.__qualname__)


def test_mode_is_selected_by_env_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTRUMENT_PROFILER_MODE", "sampler")
    monkeypatch.setenv("PYSTRUMENT_SAMPLER_INTERVAL", "0.02")
    config = ProfilerConfig.load()
    assert (config.profiler_mode, config.sampler_interval) == ("sampler", 0.02)
    assert PyinstrumentSpanProcessor.from_config(config).profiler_mode == "sampler"
    monkeypatch.setenv("PYSTRUMENT_PROFILER_MODE", "perf")
    with pytest.raises(ConfigError, match="PYSTRUMENT_PROFILER_MODE"):
        ProfilerConfig.load()
    with pytest.raises(ValueError, match="profiler_mode"):
        PyinstrumentSpanProcessor(profiler_mode="perf")
    with pytest.raises(ValueError, match="sampler_interval"):
        PyinstrumentSpanProcessor(sampler_interval=0)


def test_the_stack_reader_is_selected_by_env_and_checked(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setenv("PYSTRUMENT_SAMPLER_BACKEND", "python")
    config = ProfilerConfig.load()
    assert config.sampler_backend == "python"
    processor = PyinstrumentSpanProcessor.from_config(config)
    try:
        assert processor._modes._sampler().backend == "python"
    finally:
        processor.shutdown()
    monkeypatch.setenv("PYSTRUMENT_SAMPLER_BACKEND", "rust")
    with pytest.raises(ConfigError, match="PYSTRUMENT_SAMPLER_BACKEND"):
        ProfilerConfig.load()
    # Asked for by name where it cannot run: the start fails and says why, naming the key.
    monkeypatch.setattr(stack_sampler, "native_unavailable_reason", lambda: "not built")
    with pytest.raises(ValueError, match=r"sampler_backend is not available here \(not built\)"):
        PyinstrumentSpanProcessor(sampler_backend="native")
    # auto falls back to the Python thread (this test's `backend` decides which it finds).
    processor = PyinstrumentSpanProcessor(sampler_backend="auto")
    try:
        assert processor._modes._sampler().backend == backend
    finally:
        processor.shutdown()


FORK_SCRIPT = """
import os, sys, threading, time
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from otel_pyinstrument_processor import PyinstrumentSpanProcessor, decode_profile, iter_nodes
from otel_pyinstrument_processor.stack_sampler import shared_sampler

def busy_in_child():
    # 60 ms, then on until the child's own sampling thread has sampled twice (a loaded
    # machine can keep a fresh thread off the CPU for longer than 60 ms; seen once).
    end = time.perf_counter() + 0.06
    while time.perf_counter() < end:
        pass
    request = shared_sampler("BACKEND").request_on(threading.get_ident())
    give_up = time.monotonic() + 10.0
    while request is not None and len(request.records) < 2 and time.monotonic() < give_up:
        pass

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(
    PyinstrumentSpanProcessor(
        profiler_mode="sampler", sampler_interval=0.005, sampler_backend="BACKEND"
    )
)
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("fork")
with tracer.start_as_current_span("parent", kind=SpanKind.SERVER):
    time.sleep(0.02)
pid = os.fork()
if pid == 0:
    with tracer.start_as_current_span("child", kind=SpanKind.SERVER):
        busy_in_child()
    span = [s for s in exporter.get_finished_spans() if s.name == "child"][0]
    tree = decode_profile(span.attributes["pystrument.profile.tree"])
    names = {node.function for node, _ in iter_nodes(tree)}
    os._exit(0 if "busy_in_child" in names else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(sys.modules["os"], "fork"), reason="needs os.fork")
def test_forked_child_samples_with_its_own_thread(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT.replace("BACKEND", backend)],
        cwd=REPO_ROOT,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_request_without_a_sample_carries_cpu_time_and_the_sample_count_only() -> None:
    # A 10 s interval: the sampling thread never ticks during these requests.
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=10.0))
    try:
        for index in range(3):
            with h.tracer.start_as_current_span(
                f"GET /{index}",
                kind=SpanKind.SERVER,
                attributes={"http.request.header.authorization": ("secret",)},
            ):
                query = h.tracer.start_span("SELECT", attributes={"db.system": "sqlite"})
                query.end()
        spans = h.spans()
        for index in range(3):
            span = spans[f"GET /{index}"].attributes
            assert span[attrs.PROFILE_SAMPLE_COUNT] == 0
            assert span[attrs.CPU_TIME] >= 0
            assert span[attrs.DB_QUERY_COUNT] == 1  # child spans still counted
            # Still redacted on the cheap path: the header scan reads the SDK's own dict.
            assert span["http.request.header.authorization"] == "[REDACTED]"
            assert attrs.PROFILE_INTERVAL not in span
            assert attrs.PROFILE_DURATION not in span
            assert attrs.PROFILE_TREE not in span
        assert h.processor.stats.profiles_empty == 3
    finally:
        h.provider.shutdown()


def test_each_request_is_sampled_at_its_own_interval(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """One sampling thread serves every processor of the process; a request is sampled at
    its own processor's interval, not at the shortest one any processor ever asked for (a
    processor that is never shut down would otherwise keep them all at its rate)."""
    python_reader_only(backend)
    from otel_pyinstrument_processor import stack_sampler

    # The long-interval request's first sample falls at a random point of its interval:
    # fixed at half of it, 30 s from now.
    monkeypatch.setattr(stack_sampler.random, "random", lambda: 0.5)
    sampler = StackSampler()
    fast_user, slow_user = object(), object()
    fast_started, slow_done = threading.Event(), threading.Event()

    def fast_request() -> list[tuple[list[str], float]]:
        request = sampler.begin(fast_user, 0.005, sys._getframe())
        fast_started.set()
        slow_done.wait(timeout=10)
        return sampler.end(request)

    worker = threading.Thread(target=lambda: results.append(fast_request()))
    results: list[list[tuple[list[str], float]]] = []
    worker.start()
    try:
        assert fast_started.wait(timeout=10)
        slow = sampler.begin(slow_user, 60.0, sys._getframe())
        fast = sampler.request_on(worker.ident or 0)
        deadline = time.monotonic() + 10
        # Run until the other request has had two samples at its 5 ms interval.
        while fast is not None and len(fast.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        slow_records = sampler.end(slow)
    finally:
        slow_done.set()
        worker.join(timeout=10)
        sampler.release(fast_user)
        sampler.release(slow_user)
    assert len(results[0]) >= 2
    assert not slow_records


def started_as_the_instrumentations_start(tracer: Tracer) -> None:
    # The Flask, WSGI and Django instrumentations: start_span from a plain function, then
    # use_span (no generator between the span and the application).
    span = tracer.start_span("GET /instrumented", kind=SpanKind.SERVER)
    with trace.use_span(span, end_on_exit=True):
        spin_cpu(0.03)


def calls_a_decorated_handler(tracer: Tracer) -> None:
    @tracer.start_as_current_span("GET /decorated", kind=SpanKind.SERVER)
    def decorated_handler() -> None:
        spin_cpu(0.03)

    decorated_handler()


@pytest.mark.parametrize("direct", [False, True], ids=["added", "only_processor"])
def test_the_tree_is_rooted_where_the_application_started_the_span(direct: bool) -> None:
    """However the span was started (start_span, the decorator form of
    start_as_current_span, its with form), and however the SDK calls the processor (through
    the provider's multi-processor, or as its only processor: a frame fewer), the tree's
    root is the application frame that started the span, never the SDK's."""
    processor = PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=0.005)
    exporter = InMemorySpanExporter()
    if direct:
        provider = TracerProvider(active_span_processor=processor)  # type: ignore[arg-type]
        processor_spans = []
        original_on_end = processor.on_end

        def keep(span: ReadableSpan) -> None:
            processor_spans.append(span)
            original_on_end(span)

        processor.on_end = keep  # type: ignore[method-assign]
    else:
        provider = TracerProvider()
        provider.add_span_processor(processor)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    try:
        started_as_the_instrumentations_start(tracer)
        calls_a_decorated_handler(tracer)
        with tracer.start_as_current_span("GET /with", kind=SpanKind.SERVER):
            spin_cpu(0.03)
        ended = processor_spans if direct else exporter.get_finished_spans()
        spans = {span.name: span for span in ended}
        roots = {name: tree_of(span) for name, span in spans.items()}
        assert roots["GET /instrumented"].function == "started_as_the_instrumentations_start"
        assert roots["GET /decorated"].function == "calls_a_decorated_handler"
        assert "decorated_handler" in functions(roots["GET /decorated"])
        with_root = roots["GET /with"]
        assert (
            with_root.function == "test_the_tree_is_rooted_where_the_application_started_the_span"
        )
        for tree in roots.values():
            assert "spin_cpu" in functions(tree)
            assert not any("opentelemetry/sdk" in node.file for node in _nodes(tree))
    finally:
        provider.shutdown()


def test_requests_without_a_sample_follow_keep_if_slow() -> None:
    # A 10 s interval: no request here gets a sample; the short path to the attributes
    # still tells a request faster than the threshold (dropped) from a slower one (empty).
    h = Harness(
        PyinstrumentSpanProcessor(
            profiler_mode="sampler", sampler_interval=10.0, slow_threshold=0.02
        )
    )
    try:
        with h.tracer.start_as_current_span("GET /fast", kind=SpanKind.SERVER):
            pass
        with h.tracer.start_as_current_span("GET /slow", kind=SpanKind.SERVER):
            time.sleep(0.03)
        spans = h.spans()
        fast, slow = spans["GET /fast"].attributes, spans["GET /slow"].attributes
        assert fast[attrs.PROFILE_DROPPED_FAST] is True
        assert attrs.PROFILE_DROPPED_FAST not in slow
        assert (fast[attrs.PROFILE_SAMPLE_COUNT], slow[attrs.PROFILE_SAMPLE_COUNT]) == (0, 0)
        assert h.processor.stats.profiles_dropped_fast == 1
        assert h.processor.stats.profiles_empty == 1
        assert h.processor.stats.profiles_started == 2
    finally:
        h.provider.shutdown()


def test_headers_are_redacted_when_a_span_adds_one_to_keys_seen_before() -> None:
    # Spans whose keys were all seen before without a header skip the header scan: a span
    # with the same keys plus a credential header must still be scanned and redacted.
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=10.0))
    plain = {"url.path": "/p", "http.request.method": "GET"}
    try:
        for _ in range(2):
            with h.tracer.start_as_current_span("GET /p", kind=SpanKind.SERVER, attributes=plain):
                pass
        with h.tracer.start_as_current_span(
            "GET /h", kind=SpanKind.SERVER, attributes=plain
        ) as span:
            span.set_attribute("http.response.header.set_cookie", ("sid=1",))
        attributes = h.spans()["GET /h"].attributes
        assert attributes["http.response.header.set_cookie"] == "[REDACTED]"
        assert attributes["url.path"] == "/p"
    finally:
        h.provider.shutdown()


def run_one_sample_requests(h: Harness, count: int) -> list[ReadableSpan]:
    """``count`` requests that each get exactly one sample: a helper thread runs the
    sampling pass once while the request waits for it (the processor's own thread ticks
    every 10 s, at its requests' interval from the start: no random first offset)."""
    sampler = shared_sampler()
    interval, sampler._interval = sampler._interval, 10.0
    asked, done = threading.Event(), threading.Event()

    def helper() -> None:
        for _ in range(count):
            asked.wait()
            asked.clear()
            sampler._sample()
            done.set()

    thread = threading.Thread(target=helper)
    thread.start()
    try:
        for _ in range(count):
            with h.tracer.start_as_current_span("GET /one", kind=SpanKind.SERVER):
                done.clear()
                asked.set()
                done.wait()
    finally:
        thread.join(timeout=10)
        sampler._interval = interval  # the next tests' requests are sampled on time
    return [s for s in h.exporter.get_finished_spans() if s.name == "GET /one"]


def test_a_one_sample_tree_is_encoded_by_the_sampling_thread_as_the_request_would(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    python_reader_only(backend)
    encoded_on: list[str] = []
    original = ProfileAttributes.first_sample_tree

    def first_sample_tree(self: ProfileAttributes, *args: object) -> object:
        encoded_on.append(threading.current_thread().name)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ProfileAttributes, "first_sample_tree", first_sample_tree)
    stopped: list[StoppedProfile] = []
    original_stopped = ProfileModes.stopped_sampled

    def stopped_sampled(self: ProfileModes, *args: object) -> StoppedProfile:
        stopped.append(original_stopped(self, *args))  # type: ignore[arg-type]
        return stopped[-1]

    monkeypatch.setattr(ProfileModes, "stopped_sampled", stopped_sampled)
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=10.0))
    try:
        # A stack's template is made at its second sighting: the third request on.
        spans = run_one_sample_requests(h, 4)
    finally:
        h.provider.shutdown()
    assert [s.attributes[attrs.PROFILE_SAMPLE_COUNT] for s in spans] == [1] * 4
    assert h.processor.stats.profiles_attached == 4
    assert "MainThread" not in encoded_on and len(encoded_on) == 4
    ahead = [profile for profile in stopped if profile.first_tree is not None]
    assert len(ahead) >= 2  # the requests after the template was made
    for span, profile in zip(spans, stopped, strict=True):
        tree = tree_of(span)
        assert tree.function == "run_one_sample_requests"
        # The same bytes as the request's end makes from the same sample without help.
        unaided = h.processor._profile_attributes.of(
            profile._replace(first_tree=None), h.processor._marker(0), (), lambda: 1 << 20
        )
        assert unaided[attrs.PROFILE_TREE] == span.attributes[attrs.PROFILE_TREE]


def test_a_tree_encoded_ahead_still_keeps_the_span_attribute_length_limit(backend: str) -> None:
    python_reader_only(backend)
    # The sampling thread encodes under the processor's max_profile_bytes; the span's own
    # length limit, smaller here, is checked at the request's end.
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=10.0))
    h.provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=60))
    h.provider.add_span_processor(h.processor)
    h.provider.add_span_processor(SimpleSpanProcessor(h.exporter))
    h.tracer = h.provider.get_tracer("tests")
    try:
        spans = run_one_sample_requests(h, 4)
        assert [s.attributes[attrs.PROFILE_SAMPLE_COUNT] for s in spans] == [1] * 4
        for span in spans:
            tree = span.attributes.get(attrs.PROFILE_TREE)
            if tree is not None:
                assert len(tree) <= 60
                tree_of(span)  # never a cut-off, undecodable value
        assert (
            h.processor.stats.profiles_dropped_oversize + h.processor.stats.profiles_attached == 4
        )
    finally:
        h.provider.shutdown()


@pytest.mark.parametrize("ending_hook", [True, False], ids=["on_ending", "end_override"])
def test_sampled_requests_with_either_end_hook_and_shutdown(
    monkeypatch: pytest.MonkeyPatch, ending_hook: bool
) -> None:
    # The sampler mode's own start and end: attributes written from _on_ending, or (an SDK
    # that does not call it) from an override of end() that is undone afterwards; a span
    # still running at shutdown ends without them, and nothing is profiled after.
    monkeypatch.setattr(processor_module, "ENDING_HOOK_WORKS", ending_hook)
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=10.0))
    try:
        span = h.tracer.start_span("GET /a", kind=SpanKind.SERVER)
        assert ("end" in vars(span)) is not ending_hook
        span.end()
        assert "end" not in vars(span)
        span.end()  # a second end is harmless
        attributes = h.spans()["GET /a"].attributes
        assert attributes[attrs.PROFILE_SAMPLE_COUNT] == 0
        assert attributes[attrs.CPU_TIME] >= 0
        running = h.tracer.start_span("GET /b", kind=SpanKind.SERVER)
        h.processor.shutdown()
        assert "end" not in vars(running)
        running.end()
        assert attrs.PROFILE_SAMPLE_COUNT not in h.spans()["GET /b"].attributes
        with h.tracer.start_as_current_span("GET /c", kind=SpanKind.SERVER):
            pass
        assert attrs.PROFILE_SAMPLE_COUNT not in h.spans()["GET /c"].attributes
        assert h.processor.stats.profiles_started == 2
        assert h.processor._active == {}
    finally:
        h.provider.shutdown()


@pytest.mark.parametrize(
    ("used", "late", "walk_cpu", "expected"),
    [
        # The GIL was free when the tick was due: blocked, unless it computes without it.
        (0.006, 0.0001, 0.0, WAITING),
        (0.006, 0.0001, 0.00004, RUNNING),
        # Someone held the GIL from the due time on, not this thread (it used little CPU).
        (0.0005, 0.003, 0.0, WAITING),
        # This thread held it for the whole switch interval: computing where it is now.
        (0.009, 0.0051, 0.0, RUNNING),
        # This thread computed from the due time on, then blocked: in code not on its stack.
        (0.006, 0.002, 0.0, UNSEEN),
    ],
)
def test_the_state_at_the_tick_is_told_from_lateness_and_the_cpu_clock(
    used: float, late: float, walk_cpu: float, expected: str
) -> None:
    state = thread_state(
        used=used, late=late, switch_interval=0.005, walk_cpu=walk_cpu, walk_wall=0.0001
    )
    assert state == expected


def bursts_then_waits(rng: random.Random, bursts: int) -> None:
    for _ in range(bursts):
        end = time.thread_time() + 0.003 * (0.5 + rng.random())
        while time.thread_time() < end:
            pass
        time.sleep(0.002 * (0.5 + rng.random()))


def test_cpu_bursts_shorter_than_the_switch_interval_are_not_read_as_waiting(
    backend: str,
) -> None:
    # A request computing ~3 ms between ~2 ms waits (~60 % computing). The Python sampling
    # thread gets the GIL only when the request blocks, so each sample's stack is a wait;
    # before the sample stood for the state when its tick was due, the tree read 0 %
    # computing. The native reader reads the stack at the due time, GIL or not.
    sampler = StackSampler(native_reader() if backend == "native" else None)
    rng = random.Random(3)
    records: list[tuple[list[str], float]] = []
    try:
        for _ in range(4):
            request = sampler.begin(sampler, 0.01, sys._getframe(), cpu_start=time.thread_time())
            bursts_then_waits(rng, 25)
            records += sampler.end(request)
    finally:
        sampler.release(sampler)
    total = sum(elapsed for _, elapsed in records)
    computing = sum(elapsed for stack, elapsed in records if stack[-1] != WAIT_FRAME)
    unseen = sum(elapsed for stack, elapsed in records if stack[-1] == CPU_FRAME)
    assert len(records) >= 20
    assert 0.25 * total < computing < 0.95 * total, (computing, total)
    if backend == "native":
        assert unseen == 0  # never late: the state is the thread's at the due time
        return
    # The [cpu] frame stands under the deepest frame that was on the stack at the previous
    # sample too (at a request's first sample: the frame that began it).
    parents = [stack[-2].split("\x00")[0] for stack, _ in records if stack[-1] == CPU_FRAME]
    assert set(parents) <= {"bursts_then_waits", sys._getframe().f_code.co_name}
    assert parents.count("bursts_then_waits") >= len(parents) - 4
    assert unseen > 0
