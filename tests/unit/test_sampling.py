"""Smart sampling, keep-if-slow, max_trace_duration and request metrics, with the real SDK
and the real profiler."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_pyinstrument_processor import PyinstrumentSpanProcessor, decode_profile
from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor.sampling import ProfileBudget, SamplingPolicy, request_path


class Rig:
    def __init__(self, **settings: object) -> None:
        # pyinstrument's hook: these requests last a few ms, shorter than the sampling
        # thread's interval, and must carry trees.
        settings.setdefault("profiler_mode", "pyinstrument")
        self.processor = PyinstrumentSpanProcessor(**settings)  # type: ignore[arg-type]
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests")

    def request(self, path: str, seconds: float = 0.0, children: int = 0) -> None:
        with self.tracer.start_as_current_span(
            f"GET {path}", kind=SpanKind.SERVER, attributes={"url.path": path}
        ):
            for index in range(children):
                with self.tracer.start_as_current_span(
                    "SELECT", attributes={"db.system": "sqlite"}
                ):
                    time.sleep(0.002 if index else 0.06)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def rig_factory() -> Iterator:
    made: list[Rig] = []

    def make(**settings: object) -> Rig:
        made.append(Rig(**settings))
        return made[-1]

    yield make
    for rig in made:
        rig.provider.shutdown()


def test_request_path_prefers_url_path_and_drops_the_query() -> None:
    assert request_path({"url.path": "/a", "http.target": "/b"}) == "/a"
    assert request_path({"http.target": "/b?x=1"}) == "/b"
    assert request_path({}, "GET /c") == "/c"
    assert request_path(None, "GET") is None


def test_policy_exclusions_includes_and_route_rates() -> None:
    policy = SamplingPolicy(
        sampling_rate=0.0,
        route_sampling_rates={"/api/reports/*": 1.0, "/api/*": 0.0},
        excluded_paths=["/health", "/static/*.css"],
        include_patterns=["/api/", "/static"],
    )
    assert policy.should_profile({"url.path": "/api/reports/sales"}, "") is True
    assert policy.should_profile({"url.path": "/api/users"}, "") is False
    assert policy.should_profile({"url.path": "/health"}, "") is False
    assert policy.should_profile({"url.path": "/static/site.css"}, "") is False
    assert policy.should_profile({"url.path": "/admin"}, "") is False  # not included


def test_policy_flat_rate_is_roughly_the_rate() -> None:
    policy = SamplingPolicy(sampling_rate=0.3, rng=random.Random(1))
    hits = sum(policy.should_profile({}, "GET /x") for _ in range(4000))
    assert 1000 < hits < 1400


def test_budget_caps_profiles_per_second() -> None:
    budget = ProfileBudget(5)
    taken = sum(budget.take() for _ in range(100))
    assert taken == 5  # the burst, then nothing until tokens refill
    time.sleep(0.25)
    assert budget.take() is True


def test_cap_limits_profiled_requests(rig_factory) -> None:
    rig = rig_factory(max_profiles_per_second=3)
    for _ in range(10):
        rig.request("/api/x")
    profiled = [s for s in rig.spans() if attrs.PROFILE_SAMPLE_COUNT in (s.attributes or {})]
    assert len(profiled) == 3
    assert rig.processor.stats.profiles_started == 3


def test_excluded_path_is_not_profiled(rig_factory) -> None:
    rig = rig_factory(excluded_paths=["/health"])
    rig.request("/health", 0.01)
    rig.request("/api/x", 0.01)
    by_name = {s.name: s for s in rig.spans()}
    assert attrs.PROFILE_SAMPLE_COUNT not in by_name["GET /health"].attributes
    assert attrs.PROFILE_TREE in by_name["GET /api/x"].attributes


def test_keep_if_slow_drops_only_fast_trees(rig_factory) -> None:
    rig = rig_factory(slow_threshold=0.05)
    rig.request("/fast", 0.002)
    rig.request("/slow", 0.08)
    by_name = {s.name: s.attributes for s in rig.spans()}
    fast, slow = by_name["GET /fast"], by_name["GET /slow"]
    assert attrs.PROFILE_TREE not in fast
    assert fast[attrs.PROFILE_DROPPED_FAST] is True
    assert fast[attrs.CPU_TIME] >= 0  # metrics stay
    assert attrs.PROFILE_TREE in slow
    assert decode_profile(slow[attrs.PROFILE_TREE]).total_time > 0.05
    assert rig.processor.stats.profiles_dropped_fast == 1


def test_max_trace_duration_stops_recording(rig_factory) -> None:
    rig = rig_factory(max_trace_duration=0.05, interval=0.001)
    rig.request("/runaway", 0.3)
    span = rig.spans()[0].attributes
    assert span[attrs.PROFILE_STOPPED_EARLY] is True
    tree = decode_profile(span[attrs.PROFILE_TREE])
    assert tree.total_time < 0.15  # about max_trace_duration, not the 0.3 s the request took
    assert span[attrs.PROFILE_SAMPLE_COUNT] < 150


def test_database_child_spans_are_counted_on_the_entry_span(rig_factory) -> None:
    # 2 ms queries and one of 60 ms around a 40 ms threshold: a loaded machine can wake a
    # 2 ms sleep 20 ms late.
    rig = rig_factory(slow_query_threshold=0.04, track_memory=True)
    rig.request("/orders", 0.0, children=4)
    entry = next(s for s in rig.spans() if s.kind is SpanKind.SERVER).attributes
    assert entry[attrs.DB_QUERY_COUNT] == 4
    assert 0.065 < entry[attrs.DB_QUERY_TIME] < 1.0
    assert entry[attrs.DB_SLOW_QUERIES] == 1
    assert entry[attrs.MEMORY_PEAK] > 1_000_000
    assert isinstance(entry[attrs.MEMORY_DELTA], int)
    assert not rig.processor._children  # nothing left tracked


def test_cache_spans_count_hits_and_misses(rig_factory) -> None:
    rig = rig_factory()
    with rig.tracer.start_as_current_span("GET /c", kind=SpanKind.SERVER):
        for hit in (True, True, False):
            with rig.tracer.start_as_current_span("GET key", attributes={"cache.hit": hit}):
                pass
        with rig.tracer.start_as_current_span("SET", attributes={"db.system": "redis"}):
            pass
    entry = next(s for s in rig.spans() if s.kind is SpanKind.SERVER).attributes
    assert (entry[attrs.CACHE_HITS], entry[attrs.CACHE_MISSES]) == (2, 1)
    assert entry[attrs.CACHE_TIME] >= 0
    assert attrs.DB_QUERY_COUNT not in entry  # the redis span is a cache, not a query


def test_credential_headers_are_redacted_on_profiled_spans(rig_factory) -> None:
    rig = rig_factory()
    with rig.tracer.start_as_current_span(
        "GET /h",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.header.authorization": ("Bearer secret",),
            "http.request.header.cookie": ("sid=1",),
            "http.request.header.x_request_id": ("r1",),
        },
    ):
        time.sleep(0.005)
    entry = rig.spans()[0].attributes
    assert entry["http.request.header.authorization"] == "[REDACTED]"
    assert entry["http.request.header.cookie"] == "[REDACTED]"
    assert entry["http.request.header.x_request_id"] == ("r1",)
