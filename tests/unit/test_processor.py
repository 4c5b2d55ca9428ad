"""PyinstrumentSpanProcessor with the real OpenTelemetry SDK and the real profiler."""

from __future__ import annotations

import concurrent.futures
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from pyinstrument.stack_sampler import get_stack_sampler

from otel_pyinstrument_processor import (
    CallTreeNode,
    PyinstrumentSpanProcessor,
    configure,
    decode_profile,
    flatten,
    iter_nodes,
    profile_attributes,
)
from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor import processor as processor_module
from otel_pyinstrument_processor.setup import export_headers


class Harness:
    def __init__(self, processor: PyinstrumentSpanProcessor, *, exporter_first: bool = True):
        self.processor = processor
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(span_limits=SpanLimits())
        exporting = SimpleSpanProcessor(self.exporter)
        for added in (exporting, processor) if exporter_first else (processor, exporting):
            self.provider.add_span_processor(added)
        self.tracer: Tracer = self.provider.get_tracer("tests")

    def spans(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="pyinstrument"))
    yield h
    h.provider.shutdown()


def spin(seconds: float) -> int:
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += 1
    return count


def busy_reporting_function() -> int:
    # Spins for 60 ms of this thread's CPU time, however loaded the machine is.
    count = 0
    end = time.thread_time() + 0.06
    while time.thread_time() < end:
        count += 1
    return count


def busy_alpha() -> int:
    return spin(0.05)


def busy_beta() -> int:
    return spin(0.05)


def tree_of(span: ReadableSpan) -> CallTreeNode:
    return decode_profile(
        span.attributes[attrs.PROFILE_TREE], span.attributes[attrs.PROFILE_FORMAT]
    )


def functions(tree: CallTreeNode) -> set[str]:
    return {node.function for node, _ in iter_nodes(tree)}


def find(tree: CallTreeNode, function: str) -> CallTreeNode:
    return next(node for node, _ in iter_nodes(tree) if node.function == function)


def test_server_span_gets_a_call_tree_with_cpu_and_sleep_time(harness: Harness) -> None:
    with harness.tracer.start_as_current_span("GET /report", kind=SpanKind.SERVER):
        busy_reporting_function()
        time.sleep(0.04)
    span = harness.spans()["GET /report"]
    assert span.attributes[attrs.PROFILE_FORMAT] == "calltree/1;json+zlib+base64"
    assert span.attributes[attrs.PROFILE_TRUNCATED] is False
    assert span.attributes[attrs.PROFILE_INTERVAL] == 0.001
    assert span.attributes[attrs.PROFILE_SAMPLE_COUNT] > 10
    duration = span.attributes[attrs.PROFILE_DURATION]
    assert 0.09 <= duration < 2
    # CPU time counts the spin but not the sleep.
    assert 0.06 <= span.attributes[attrs.CPU_TIME] <= duration - 0.035

    tree = tree_of(span)
    busy = find(tree, "busy_reporting_function")
    assert busy.file == __file__
    assert busy.total_time >= 0.4 * tree.total_time
    sleep = find(tree, "sleep")  # wall time: the sleep is in the tree too
    assert sleep.file == "<built-in>"
    assert sleep.total_time >= 0.035
    assert sleep.total_time >= 0.1 * tree.total_time
    assert tree.total_time == pytest.approx(duration, rel=0.2)
    # No profiler or SDK plumbing left in the tree.
    assert not any(
        "pyinstrument" in n.file or "opentelemetry" in n.file for n, _ in iter_nodes(tree)
    )
    assert flatten(tree)[0]["function_name"] == tree.function
    assert harness.processor.stats.profiles_attached == 1
    assert harness.processor.stats.errors == 0


def profiled_request(tracer: Tracer, name: str, work, barrier: threading.Barrier) -> None:
    barrier.wait()
    with tracer.start_as_current_span(name, kind=SpanKind.SERVER):
        barrier.wait()  # both requests are profiled at the same time
        work()


def assert_two_concurrent_requests_see_only_their_own_frames(
    harness: Harness, work_alpha, work_beta
) -> None:
    """Serve "alpha" and "beta" on two threads at once; each tree has only its own work."""
    barrier = threading.Barrier(2)
    threads = [
        threading.Thread(target=profiled_request, args=(harness.tracer, name, work, barrier))
        for name, work in (("alpha", work_alpha), ("beta", work_beta))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans = harness.spans()
    alpha, beta = functions(tree_of(spans["alpha"])), functions(tree_of(spans["beta"]))
    name_alpha, name_beta = work_alpha.__name__, work_beta.__name__
    assert name_alpha in alpha and name_beta not in alpha
    assert name_beta in beta and name_alpha not in beta
    assert harness.processor.stats.profiles_attached == 2


def test_concurrent_requests_on_two_threads_get_only_their_own_frames(harness: Harness) -> None:
    assert_two_concurrent_requests_see_only_their_own_frames(harness, busy_alpha, busy_beta)


@pytest.mark.parametrize("exporter_first", [True, False])
def test_tree_reaches_processors_added_before_and_after_ours(exporter_first: bool) -> None:
    h = Harness(
        PyinstrumentSpanProcessor(profiler_mode="pyinstrument"), exporter_first=exporter_first
    )
    with h.tracer.start_as_current_span("req", kind=SpanKind.SERVER):
        busy_alpha()
    assert "busy_alpha" in functions(tree_of(h.spans()["req"]))
    h.provider.shutdown()


def test_sampling_rate_zero_never_profiles() -> None:
    h = Harness(PyinstrumentSpanProcessor(sampling_rate=0.0))
    for _ in range(20):
        with h.tracer.start_as_current_span("req", kind=SpanKind.SERVER):
            pass
    assert all(attrs.PROFILE_TREE not in s.attributes for s in h.exporter.get_finished_spans())
    assert h.processor.stats.profiles_started == 0


def test_fractional_sampling_rate_profiles_some_spans() -> None:
    h = Harness(PyinstrumentSpanProcessor(sampling_rate=0.5))
    for _ in range(200):
        with h.tracer.start_as_current_span("req", kind=SpanKind.SERVER):
            pass
    h.provider.shutdown()
    assert 40 < h.processor.stats.profiles_started < 160


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_sampling_rate_is_refused_with_its_value(rate: object) -> None:
    with pytest.raises(ValueError, match="sampling_rate") as info:
        PyinstrumentSpanProcessor(sampling_rate=rate)  # type: ignore[arg-type]
    assert repr(rate) in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"interval": 0}, {"interval": -1.0}, {"max_profile_bytes": 0}, {"min_share": 1}]
)
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PyinstrumentSpanProcessor(**kwargs)


def test_span_selection_by_kind_and_request_attribute(harness: Harness) -> None:
    tracer = harness.tracer
    with tracer.start_as_current_span("internal"):
        pass
    with tracer.start_as_current_span("client", kind=SpanKind.CLIENT):
        pass
    with tracer.start_as_current_span("asked", attributes={attrs.PROFILE_REQUESTED: True}):
        busy_alpha()
    opted_out = {attrs.PROFILE_REQUESTED: False}
    with tracer.start_as_current_span("opted-out", kind=SpanKind.SERVER, attributes=opted_out):
        pass
    spans = harness.spans()
    assert "busy_alpha" in functions(tree_of(spans["asked"]))
    for name in ("internal", "client", "opted-out"):
        assert attrs.PROFILE_TREE not in spans[name].attributes, name
    assert harness.processor.stats.profiles_started == 1


def test_nested_server_span_is_not_profiled_twice(harness: Harness) -> None:
    with (
        harness.tracer.start_as_current_span("outer", kind=SpanKind.SERVER),
        harness.tracer.start_as_current_span("inner", kind=SpanKind.SERVER),
    ):
        busy_alpha()
    with harness.tracer.start_as_current_span("next", kind=SpanKind.SERVER):
        busy_beta()
    spans = harness.spans()
    assert "busy_alpha" in functions(tree_of(spans["outer"]))
    assert attrs.PROFILE_TREE not in spans["inner"].attributes
    assert "busy_beta" in functions(tree_of(spans["next"]))  # the marker was cleared
    assert harness.processor.stats.profiles_skipped_nested == 1
    assert get_stack_sampler().subscribers == []


def test_application_exception_propagates_and_the_span_keeps_its_tree(harness: Harness) -> None:
    class CheckoutFailed(Exception):
        pass

    with (
        pytest.raises(CheckoutFailed),
        harness.tracer.start_as_current_span("checkout", kind=SpanKind.SERVER),
    ):
        busy_alpha()
        raise CheckoutFailed("card declined")
    span = harness.spans()["checkout"]
    assert span.status.status_code.name == "ERROR"
    assert "busy_alpha" in functions(tree_of(span))


def test_failure_inside_the_processor_is_counted_logged_once_and_not_raised(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_encoder(*args: object, **kwargs: object) -> None:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(profile_attributes, "encode_aggregated", broken_encoder)
    caplog.set_level(logging.WARNING, logger=processor_module.__name__)
    for _ in range(3):
        with harness.tracer.start_as_current_span("req", kind=SpanKind.SERVER) as span:
            busy_alpha()
            result = "request completed"
        assert not span.is_recording()
    assert result == "request completed"
    finished = harness.exporter.get_finished_spans()
    assert len(finished) == 3
    assert all(attrs.PROFILE_TREE not in s.attributes for s in finished)
    assert all(attrs.PROFILE_SAMPLE_COUNT in s.attributes for s in finished)  # metrics kept
    assert harness.processor.stats.errors == 3
    warnings = [r for r in caplog.records if r.name == processor_module.__name__]
    assert len(warnings) == 1 and "encoder exploded" in caplog.text


def test_span_ended_on_another_thread_drops_the_profile_and_cleans_up(harness: Harness) -> None:
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    span = worker.submit(harness.tracer.start_span, "handoff", kind=SpanKind.SERVER).result()
    span.end()  # on the main thread
    assert attrs.PROFILE_TREE not in harness.spans()["handoff"].attributes
    assert attrs.CPU_TIME not in harness.spans()["handoff"].attributes
    assert harness.processor.stats.profiles_dropped_cross_thread == 1
    assert worker.submit(lambda: len(get_stack_sampler().subscribers)).result() == 1

    def next_request() -> int:
        with harness.tracer.start_as_current_span("after", kind=SpanKind.SERVER):
            busy_alpha()
        return len(get_stack_sampler().subscribers)

    assert worker.submit(next_request).result() == 0  # the orphan was stopped on its thread
    assert "busy_alpha" in functions(tree_of(harness.spans()["after"]))
    worker.shutdown()


@pytest.mark.parametrize("ending_hook", [True, False], ids=["on_ending", "end_override"])
def test_shutdown_stops_running_profilers_and_span_still_ends(
    monkeypatch: pytest.MonkeyPatch, ending_hook: bool
) -> None:
    monkeypatch.setattr(processor_module, "ENDING_HOOK_WORKS", ending_hook)
    harness = Harness(PyinstrumentSpanProcessor(profiler_mode="pyinstrument"))
    span = harness.tracer.start_span("long", kind=SpanKind.SERVER)
    assert len(get_stack_sampler().subscribers) == 1
    harness.processor.shutdown()
    assert get_stack_sampler().subscribers == []
    assert "end" not in vars(span)
    span.end()
    assert attrs.PROFILE_TREE not in harness.spans()["long"].attributes
    assert harness.processor.force_flush() is True
    with harness.tracer.start_as_current_span("late", kind=SpanKind.SERVER):
        pass
    assert harness.processor.stats.profiles_started == 1
    harness.provider.shutdown()


@pytest.mark.parametrize("ending_hook", [True, False], ids=["on_ending", "end_override"])
def test_profile_finishes_once_and_double_end_is_harmless(
    monkeypatch: pytest.MonkeyPatch, ending_hook: bool
) -> None:
    # With the SDK's _on_ending hook the span instance is left alone; without it (an SDK
    # that does not call the hook) end() is overridden on the instance, then restored.
    monkeypatch.setattr(processor_module, "ENDING_HOOK_WORKS", ending_hook)
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="pyinstrument"))
    try:
        span = h.tracer.start_span("req", kind=SpanKind.SERVER)
        assert ("end" in vars(span)) is not ending_hook
        busy_alpha()
        span.end()
        assert "end" not in vars(span)
        span.end()
        assert len(h.exporter.get_finished_spans()) == 1
        assert "busy_alpha" in functions(tree_of(h.spans()["req"]))
        assert h.processor.stats.profiles_attached == 1
        assert h.processor._active == {}
    finally:
        h.provider.shutdown()


def test_attributes_written_at_end_keep_the_sdk_attribute_count_limit() -> None:
    # Written into the SDK's frozen attribute dict (from _on_ending), the profile's
    # attributes follow the SDK's rule at the count limit: the oldest are dropped, counted.
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="sampler", sampler_interval=10.0))
    h.provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=4))
    h.provider.add_span_processor(h.processor)
    h.provider.add_span_processor(SimpleSpanProcessor(h.exporter))
    with h.provider.get_tracer("t").start_as_current_span(
        "req", kind=SpanKind.SERVER, attributes={"a": 1, "b": 2, "c": 3}
    ):
        pass
    span = h.spans()["req"]
    assert list(span.attributes) == ["b", "c", attrs.PROFILE_SAMPLE_COUNT, attrs.CPU_TIME]
    assert span.attributes[attrs.PROFILE_SAMPLE_COUNT] == 0
    assert span.attributes[attrs.CPU_TIME] >= 0
    assert span.dropped_attributes == 1
    h.provider.shutdown()


def test_tree_respects_the_span_attribute_length_limit() -> None:
    # The SDK would cut a longer value at 120 characters, leaving undecodable base64.
    h = Harness(PyinstrumentSpanProcessor(profiler_mode="pyinstrument"))
    h.provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=120))
    h.provider.add_span_processor(h.processor)
    h.provider.add_span_processor(SimpleSpanProcessor(h.exporter))
    with h.provider.get_tracer("t").start_as_current_span("req", kind=SpanKind.SERVER):
        busy_alpha()
        time.sleep(0.01)
    span = h.spans()["req"]
    assert span.attributes[attrs.PROFILE_SAMPLE_COUNT] > 0
    if attrs.PROFILE_TREE in span.attributes:
        assert len(span.attributes[attrs.PROFILE_TREE]) <= 120
        tree_of(span)  # never a cut-off, undecodable value
    else:
        assert h.processor.stats.profiles_dropped_oversize == 1


def test_importing_the_package_starts_no_thread_and_no_profiler() -> None:
    code = (
        "import sys, threading\n"
        "before = threading.active_count()\n"
        "import otel_pyinstrument_processor\n"
        "assert threading.active_count() == before, threading.enumerate()\n"
        "assert sys.getprofile() is None\n"
    )
    repo_root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=repo_root)


# -- configure() ------------------------------------------------------------------------


def processors_of(provider: TracerProvider) -> tuple:
    # The SDK has no public accessor for the processors of a provider.
    return provider._active_span_processor._span_processors


def test_configure_builds_the_provider_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTRUMENT_SAMPLING_RATE", "0.25")
    monkeypatch.setenv("PYSTRUMENT_PROFILE_INTERVAL", "0.002")
    monkeypatch.setenv("PYSTRUMENT_PROJECT_KEY", "pk_test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "X-Tenant=acme")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:4317")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    provider = configure(service_name="shop", set_global=False)
    try:
        ours, batch = processors_of(provider)
        assert isinstance(ours, PyinstrumentSpanProcessor)
        assert (ours.sampling_rate, ours.interval) == (0.25, 0.002)
        assert isinstance(batch, BatchSpanProcessor)
        exporter = batch._batch_processor._exporter
        assert dict(exporter._headers) == {"x-tenant": "acme", "authorization": "Bearer pk_test"}
        assert exporter._endpoint == "collector.invalid:4317"
        resource = provider.resource.attributes
        assert resource["service.name"] == "shop"
        assert resource["deployment.environment"] == "test"
    finally:
        provider.shutdown()


def test_configure_arguments_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSTRUMENT_SAMPLING_RATE", "0.25")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    provider = configure(
        service_name="explicit", sampling_rate=1.0, interval=0.005, set_global=False
    )
    try:
        ours = processors_of(provider)[0]
        assert (ours.sampling_rate, ours.interval) == (1.0, 0.005)
        assert provider.resource.attributes["service.name"] == "explicit"
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PYSTRUMENT_SAMPLING_RATE", "lots"),
        ("PYSTRUMENT_SAMPLING_RATE", "1.5"),
        ("PYSTRUMENT_PROFILE_INTERVAL", "-1"),
        ("PYSTRUMENT_PROFILE_INTERVAL", "nan"),
    ],
)
def test_configure_names_a_bad_env_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        configure(set_global=False)


def test_configure_honours_sdk_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = configure(set_global=False)
    assert processors_of(provider) == ()
    provider.shutdown()


def test_export_headers_prefer_traces_headers_and_lowercase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYSTRUMENT_PROJECT_KEY", raising=False)
    assert export_headers() is None  # the exporter then reads OTEL_EXPORTER_OTLP_HEADERS itself
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-general=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Traces=2,Authorization=old")
    assert export_headers("k") == {"x-traces": "2", "authorization": "Bearer k"}


def test_a_subscription_pyinstrument_refuses_leaves_nothing_behind(harness: Harness) -> None:
    # pyinstrument allows one strict (async) profiler per context: with the app's own
    # running, ours cannot subscribe. The span must end normally, unprofiled, and nothing
    # of the attempt (running profile, context marker, end hook) may stay behind.
    import asyncio

    from pyinstrument import Profiler

    from otel_pyinstrument_processor.request_profile import current_marker

    async def request() -> tuple[object, object]:
        app_profiler = Profiler(async_mode="strict")
        app_profiler.start()
        try:
            with harness.tracer.start_as_current_span("req", kind=SpanKind.SERVER):
                # (current_marker: a finished marker another test's span left in the
                # main thread's context reads as no profile, as the processor means it.)
                marker_inside = current_marker()
                busy_alpha()
        finally:
            app_profiler.stop()
        return marker_inside, current_marker()

    marker_inside, marker_after = asyncio.run(request())
    assert marker_inside is None and marker_after is None
    span = harness.spans()["req"]
    assert attrs.PROFILE_SAMPLE_COUNT not in span.attributes
    assert harness.processor._active == {}
    assert harness.processor.stats.errors == 1
    assert harness.processor.stats.profiles_started == 0
    assert get_stack_sampler().subscribers == []


def test_stopped_profiles_have_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    # ProfileModes builds StoppedProfile with tuple.__new__, which fills in no default: a
    # missing field only fails where it is read (a one-sample profile's first_tree).
    from otel_pyinstrument_processor.active_profile import ProfileModes, StoppedProfile

    made: list[StoppedProfile] = []
    for name in ("stop", "stopped_sampled"):
        original = getattr(ProfileModes, name)

        def keep(self: ProfileModes, *args: object, _original: object = original) -> object:
            made.append(_original(self, *args))  # type: ignore[operator]
            return made[-1]

        monkeypatch.setattr(ProfileModes, name, keep)
    from otel_pyinstrument_processor.stack_sampler import shared_sampler

    for mode in ("pyinstrument", "sampler"):
        h = Harness(PyinstrumentSpanProcessor(profiler_mode=mode, sampler_interval=0.005))
        try:
            with h.tracer.start_as_current_span("req", kind=SpanKind.SERVER):
                busy_alpha()
                # On until sampled (a loaded machine can keep the sampling thread away).
                request = shared_sampler().request_on(threading.get_ident())
                give_up = time.monotonic() + 10.0
                while request is not None and not request.records:
                    if time.monotonic() > give_up:
                        break
        finally:
            h.provider.shutdown()
    assert len(made) == 2
    for stopped in made:
        assert len(stopped) == len(StoppedProfile._fields)
        assert (stopped.records and stopped.first_tree is None) or stopped.first_tree.tree
