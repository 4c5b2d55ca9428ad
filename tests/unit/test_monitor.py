"""monitor_performance as decorator (sync, async) and context manager, with the real SDK."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_pyinstrument_processor import PyinstrumentSpanProcessor, decode_profile
from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor.monitor import monitor_performance, monitor_view


@pytest.fixture
def setup():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(PyinstrumentSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def nightly_work() -> int:
    end = time.perf_counter() + 0.03
    count = 0
    while time.perf_counter() < end:
        count += 1
    return count


def functions_of(span) -> set[str]:
    tree = decode_profile(span.attributes[attrs.PROFILE_TREE])
    stack, names = [tree], set()
    while stack:
        node = stack.pop()
        names.add(node.function)
        stack.extend(node.children)
    return names


def test_decorator_profiles_a_sync_function_with_tags(setup):
    provider, exporter = setup

    @monitor_view(custom_tags={"api_version": "v1"}, tracer_provider=provider)
    def user_detail() -> int:
        return nightly_work()

    assert user_detail() > 0
    [span] = exporter.get_finished_spans()
    assert span.name.endswith("user_detail")
    assert span.attributes["api_version"] == "v1"
    assert "nightly_work" in functions_of(span)


def test_decorator_profiles_an_async_function(setup):
    provider, exporter = setup

    @monitor_performance("async-job", tracer_provider=provider)
    async def job() -> int:
        await asyncio.sleep(0.01)
        return nightly_work()

    assert asyncio.run(job()) > 0
    [span] = exporter.get_finished_spans()
    assert span.name == "async-job"
    assert "nightly_work" in functions_of(span)


def test_context_manager_profiles_a_block_and_records_errors(setup):
    provider, exporter = setup
    with pytest.raises(ValueError), monitor_performance("import-batch", tracer_provider=provider):
        nightly_work()
        raise ValueError("bad row")
    [span] = exporter.get_finished_spans()
    assert span.name == "import-batch"
    assert span.status.status_code.name == "ERROR"
    assert "nightly_work" in functions_of(span)
    with pytest.raises(TypeError, match="needs a name"), monitor_performance():
        pass
