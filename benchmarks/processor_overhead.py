"""Overhead of the span processor against OpenTelemetry alone and against the peers.

The peers are an extra: ``.venv/bin/pip install -e ".[dev,bench]"`` first, or Sentry,
Datadog and Pyroscope are reported as "did not run" (``make test``'s venv has only ``[dev]``).

Two parts, both printed as ratios:

1. Request overhead. One Flask app, two endpoints: ``/fast`` (~1 ms of Python) and ``/mixed``
   (~25 ms of Python + 25 ms of sleep), the Python a fixed amount of view-like work (records
   built in small functions, sorted, serialised to JSON) calibrated once per run (not a spin
   until a deadline, which would hide what a profiler costs while the work runs). Each
   variant runs in its own subprocess (Sentry, Datadog and Pyroscope patch process-wide
   state), driving the app's WSGI callable in-process from one client thread (closed loop,
   no sockets, so the figures are the instrumentation's cost, not the network's). Variants
   are interleaved over rounds; per variant we keep the best round's p50 and p99 latency,
   throughput and CPU time per request (process CPU, background threads included: the
   figure least disturbed by other load on a shared machine), then divide by OTel-only's.

   Variants: no tracing; OTel only (Flask instrumentation + BatchSpanProcessor to an exporter
   that drops); OTel + our processor at sampling rate 0, at defaults (``ProfilerConfig()``:
   the sampling thread at 100 Hz, rate 1.0 capped at 10 profiles/s), at rate 1.0 uncapped
   (``ours_sampler``: the native stack reader where it is built; ``ours_pysampler``: the
   same with the Python sampling thread), and at rate 1.0 uncapped with pyinstrument's
   per-call hook at 1 kHz
   (``ours_hook``, ``profiler_mode="pyinstrument"``); pyinstrument's own per-request
   recipe (OTel + a Profiler started/stopped in before/after_request, its tree built); Sentry
   (``sentry-sdk`` with tracing and profiling at 1.0, a transport that drops; Sentry does its
   own tracing, no OTel; ``sentry_traces`` is the same with profiling off, so Sentry's
   profiler's own cost is sentry / sentry_traces); Datadog (``ddtrace`` tracing, and its
   profiler with code hotspots, stack sampling at a fixed 100 Hz; ``datadog_traces`` is its
   tracing alone); Pyroscope (``pyroscope-io`` sampling at
   100 Hz, the ``pyroscope-otel`` span processor on OTel; uploads to a closed port fail in the
   background); ``otel_again``: OTel only once more, the A/A pair whose difference is the
   run's noise.

   Then, per endpoint, each profiler's CPU increment over the tracing it runs on (ours,
   Pyroscope's and pyinstrument's recipe over OTel only; Sentry's and Datadog's profilers
   over their own tracing), from the best rounds and per round, beside the A/A row (the
   noise); the median increment in µs of CPU per request (the baselines differ: Sentry's
   tracing costs more than OTel's, so a percentage over it flatters Sentry); and the stack
   samples per request that reached the exporter (ours) or the transport (Sentry), the
   check that the sampling was equal (Datadog's and Pyroscope's are not counted). ``bg µs``
   is the CPU per request of the process's other threads (sampling threads, span export):
   where a thread sampler's cost lands.

2. Fixed costs (same process, best of several timing loops): a SERVER span with our processor
   at rate 0 against the same span with OTel alone; one profiled span's start + stop + build
   + prune + encode with an almost empty body (also under ~30 more frames, as in a web
   server); the pyinstrument mode's per-sample aggregation and its finish + prune + encode
   of a realistic ~20-40 sample request alone; sampler-mode requests with exactly 0, 1 or
   2 samples, the sampling pass run on demand by a helper thread (``driven_sample_costs``).

3. ``--steps`` only: where a sampler-mode profiled request that gets no sample spends its
   CPU, one step at a time replaced by a no-op (an ablation; see ``no_sample_steps``).

Run from the repository root (needs the `bench` extra for the peers):
    PYTHONPATH=. .venv/bin/python benchmarks/processor_overhead.py [--rounds 2] [--quick]
    PYTHONPATH=. .venv/bin/python benchmarks/processor_overhead.py --steps
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

VARIANTS = (
    "none",
    "otel",
    "otel_again",
    "ours_rate0",
    "ours_default",
    "ours_hook",
    "ours_sampler",
    "ours_pysampler",
    "pyinstrument_mw",
    "sentry_traces",
    "sentry",
    "datadog_traces",
    "datadog",
    "pyroscope",
)
ENDPOINTS = {"/fast": 400, "/mixed": 40}  # requests per round per variant

# Stack samples the profiler took of the requests, counted where each profiler hands its
# profiles over (our spans' sample_count as they are exported; Sentry's profile envelopes,
# the active thread's samples): the check that "equal sampling" holds (Sentry drops a
# profile with fewer than 2 samples unsent, so its count misses those).
_samples = {"count": 0}
_flush: list[Callable[[], Any]] = []

# Each profiler's cost is its increment over the tracing it runs on: ours, Pyroscope's and
# pyinstrument's recipe run on OTel; Sentry's profiler runs on Sentry's own tracing.
# `otel_again` is OTel only once more: its "increment" is this run's noise (A/A).
PROFILER_BASELINES = {
    "otel_again": "otel",
    "ours_hook": "otel",
    "ours_sampler": "otel",
    "ours_pysampler": "otel",
    "pyinstrument_mw": "otel",
    "pyroscope": "otel",
    "sentry": "sentry_traces",
    "datadog": "datadog_traces",
}


def spin(seconds: float) -> int:
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += 1
    return count


# The endpoints do a fixed amount of work, not a spin until a deadline: with a deadline,
# whatever a profiler cost while the work ran (a per-call hook, a sampling thread taking the
# GIL) only made the spin do less, and never showed in CPU or latency. The work is what a
# view does: build records in small functions, format strings, serialise JSON (Python and C
# calls, ~1,000 of them a millisecond). The parent calibrates the units a millisecond once
# per run and hands the figure to every worker: all variants do the same work.
_UNITS_PER_MS_ENV = "PROCESSOR_OVERHEAD_UNITS_PER_MS"


def _price(i: int) -> float:
    return round(i * 1.07 + (i % 7) * 0.5, 2)


def _name(i: int) -> str:
    return f"item-{i}"


def _tags(i: int) -> list[int]:
    return [i % 3, i % 5]


def _record(i: int) -> dict[str, Any]:
    return {"id": i, "name": _name(i), "tags": _tags(i), "price": _price(i)}


def app_work(units: int) -> int:
    """``units`` records built and serialised, as a view renders pages of 50 results
    (page by page, so that a long request reuses its memory instead of touching new pages,
    whose faults made the CPU per request swing by a third between rounds)."""
    size = 0
    for first in range(0, units, 50):
        rows = [_record(i) for i in range(first, min(units, first + 50))]
        rows.sort(key=lambda row: row["price"])
        size += len(json.dumps(rows))
    return size


def units_per_ms() -> int:
    """How many units of :func:`app_work` make a millisecond here (calibrated once)."""
    given = os.environ.get(_UNITS_PER_MS_ENV)
    if given:
        return int(given)
    best = float("inf")
    for _ in range(15):
        started = time.perf_counter()
        app_work(2000)
        best = min(best, time.perf_counter() - started)
    units = max(1, int(2000 / (best * 1000)))
    os.environ[_UNITS_PER_MS_ENV] = str(units)
    return units


def fast_work() -> int:
    return app_work(units_per_ms())


def mixed_work() -> int:
    count = app_work(25 * units_per_ms())
    time.sleep(0.025)
    return count


def make_app(variant: str) -> Callable[..., Any]:
    """The Flask app wired for ``variant``; returns its WSGI callable."""
    if variant in ("sentry", "sentry_traces"):
        import sentry_sdk
        from sentry_sdk.integrations.flask import FlaskIntegration
        from sentry_sdk.transport import Transport

        class DroppingTransport(Transport):
            def capture_envelope(self, envelope: Any) -> None:
                for item in envelope.items:
                    profile = item.payload.json if item.type == "profile" else None
                    if profile:
                        active = profile["transactions"][0]["active_thread_id"]
                        samples = profile["profile"]["samples"]
                        _samples["count"] += sum(s["thread_id"] == active for s in samples)

        sentry_sdk.init(
            dsn="http://public@127.0.0.1:9/1",
            transport=DroppingTransport,
            traces_sample_rate=1.0,
            # sentry_traces: Sentry's tracing alone, the baseline of its profiler's cost.
            profiles_sample_rate=1.0 if variant == "sentry" else 0.0,
            integrations=[FlaskIntegration()],
        )
    if variant in ("datadog", "datadog_traces"):
        # ddtrace's tracing, and for `datadog` its profiler with code hotspots (samples linked
        # to spans, endpoint collection: the defaults), stack sampling only (no memory or
        # lock profiler) at a fixed 100 Hz: adaptive sampling off, else it lowers its rate to
        # keep itself near 1 % of CPU (25-40 Hz here), which would not be equal sampling.
        # Traces and profiles go to a closed port and are dropped.
        os.environ.update(
            {
                "DD_TRACE_AGENT_URL": "http://127.0.0.1:9",
                "DD_PROFILING_MEMORY_ENABLED": "false",
                "DD_PROFILING_LOCK_ENABLED": "false",
                "_DD_PROFILING_STACK_ADAPTIVE_SAMPLING_ENABLED": "false",
                "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
                "DD_REMOTE_CONFIGURATION_ENABLED": "false",
                "DD_TRACE_STARTUP_LOGS": "false",
            }
        )
        from ddtrace import patch

        patch(flask=True)
        if variant == "datadog":
            from ddtrace.profiling import Profiler as DatadogProfiler

            DatadogProfiler().start()
    if variant == "pyroscope":
        import pyroscope

        pyroscope.configure(
            application_name="bench", server_address="http://127.0.0.1:9", sample_rate=100
        )

    from flask import Flask

    app = Flask("bench")

    @app.get("/fast")
    def fast() -> str:
        return str(fast_work())

    @app.get("/mixed")
    def mixed() -> str:
        return str(mixed_work())

    if variant not in ("none", "sentry", "sentry_traces", "datadog", "datadog_traces"):
        # otel_again: OTel only, a second time (the A/A pair that measures the noise).
        _instrument(app, variant)
    # The app itself, as a WSGI server calls it: Sentry's Flask integration wraps
    # Flask.__call__, so calling app.wsgi_app would bypass Sentry entirely (no transaction,
    # no profile: it did, in this benchmark's runs before session 4).
    return app


def _instrument(app: Any, variant: str) -> None:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from otel_pyinstrument_processor import ProfilerConfig, PyinstrumentSpanProcessor
    from otel_pyinstrument_processor.attributes import PROFILE_SAMPLE_COUNT

    class DroppingExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            for span in spans:
                _samples["count"] += (span.attributes or {}).get(PROFILE_SAMPLE_COUNT, 0)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    _flush.append(provider.force_flush)
    if variant == "ours_rate0":
        provider.add_span_processor(PyinstrumentSpanProcessor(sampling_rate=0.0))
    elif variant == "ours_default":
        provider.add_span_processor(PyinstrumentSpanProcessor.from_config(ProfilerConfig()))
    elif variant == "ours_hook":
        # pyinstrument's per-call hook (1 kHz), every request: profiler_mode="pyinstrument".
        provider.add_span_processor(
            PyinstrumentSpanProcessor(sampling_rate=1.0, profiler_mode="pyinstrument")
        )
    elif variant == "ours_sampler":
        # Rate 1.0 uncapped, like ours_hook, with the sampling thread at 100 Hz (the default
        # mode; Sentry's, Datadog's and Pyroscope's rate) instead of pyinstrument's hook.
        provider.add_span_processor(
            PyinstrumentSpanProcessor(sampling_rate=1.0, profiler_mode="sampler")
        )
    elif variant == "ours_pysampler":
        # ours_sampler with the Python sampling thread instead of the native stack reader
        # (the fallback where the extension is not built: sampler_backend="python").
        provider.add_span_processor(
            PyinstrumentSpanProcessor(
                sampling_rate=1.0, profiler_mode="sampler", sampler_backend="python"
            )
        )
    elif variant == "ours_nosample":
        # Every request profiled, none sampled (the thread ticks every 10 s): the processor's
        # per-request bookkeeping alone, an ablation (peer_overhead.py runs it).
        provider.add_span_processor(
            PyinstrumentSpanProcessor(
                sampling_rate=1.0, profiler_mode="sampler", sampler_interval=10.0
            )
        )
    elif variant == "ours_notree":
        # Every request profiled and sampled at 100 Hz, no tree made (keep-if-slow at 10 s:
        # the samples are taken and dropped unaggregated): the tree's share of ours_sampler.
        provider.add_span_processor(
            PyinstrumentSpanProcessor(
                sampling_rate=1.0, profiler_mode="sampler", slow_threshold=10.0
            )
        )
    elif variant == "pyroscope":
        from pyroscope.otel import PyroscopeSpanProcessor

        provider.add_span_processor(PyroscopeSpanProcessor())
    elif variant == "pyinstrument_mw":
        _pyinstrument_recipe(app)
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)


def _pyinstrument_recipe(app: Any) -> None:
    # pyinstrument's documented Flask recipe, profiling every request; the tree is built
    # (root_frame) instead of rendered to HTML, which is what our processor does too.
    from flask import g
    from pyinstrument import Profiler

    @app.before_request
    def start_profile() -> None:
        g.profiler = Profiler(interval=0.001, async_mode="disabled")
        g.profiler.start()

    @app.after_request
    def stop_profile(response: Any) -> Any:
        session = g.profiler.stop()
        session.root_frame()
        return response


def run_worker(variant: str, endpoint: str, count: int) -> dict[str, float]:
    """Drive ``count`` requests through the app; latencies in seconds after a warm-up."""
    wsgi = make_app(variant)
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=endpoint).get_environ()

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    for _ in range(max(3, count // 10)):
        b"".join(wsgi(dict(environ), start_response))
    latencies = []
    for flush in _flush:
        flush()
    _samples["count"] = 0
    cpu_began = time.process_time()
    thread_began = time.thread_time()
    began = time.perf_counter()
    request_cpus = []
    for _ in range(count):
        started = time.perf_counter()
        cpu_then = time.process_time()
        b"".join(wsgi(dict(environ), start_response))
        request_cpus.append(time.process_time() - cpu_then)
        latencies.append(time.perf_counter() - started)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    request_thread_cpu = time.thread_time() - thread_began
    for flush in _flush:
        flush()
    latencies.sort()
    # This VM now and then runs an identical request at half speed, mostly after a sleep
    # (27 against 55 ms of CPU for the same /mixed request, one request in eight): a
    # request over 1.5x the round's median is the machine's, not the instrumentation's
    # (which moves the median itself), and is left out of `cpu`. `cpu_all` keeps them.
    ordered = sorted(request_cpus)
    limit = 1.5 * ordered[len(ordered) // 2]
    kept = [value for value in request_cpus if value <= limit]
    return {
        "cpu": sum(kept) / len(kept),
        "cpu_all": cpu / count,
        # The rest of the process: sampling threads, span export, timing threads.
        "background_cpu": (cpu - request_thread_cpu) / count,
        "samples": _samples["count"] / count,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": count / elapsed,
    }


def run_variant(variant: str, endpoint: str, count: int) -> dict[str, float] | str:
    # One hash seed for every worker: dict and set layouts (and so the cache behaviour of
    # the same code) then differ less between the subprocesses being compared.
    env = {
        **os.environ,
        "PYINSTRUMENT_IGNORE_OVERHEAD_WARNING": "1",
        "PYTHONHASHSEED": "0",
        _UNITS_PER_MS_ENV: str(units_per_ms()),
    }
    done = subprocess.run(
        [sys.executable, __file__, "--worker", variant, endpoint, str(count)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return (done.stderr.strip().splitlines() or ["failed"])[-1][:120]
    return json.loads(lines[-1])


# -- fixed costs -------------------------------------------------------------------------


def unprofiled_hooks(tracer: Any, attributes: dict[str, Any]) -> dict[str, float]:
    """Our processor's own cost on spans it does not profile, resolved below a µs: the
    hooks the SDK calls (`on_start`, `_on_ending`, `on_end`) timed directly on real spans,
    against the same calls on the SDK's no-op `SpanProcessor`. (The whole-span loops above
    subtract two ~26 µs figures, so their noise is a few µs.) A SERVER span at rate 0, and
    a child span while no profile runs; best of 15 interleaved loops of 20,000."""
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import SpanKind

    from otel_pyinstrument_processor import PyinstrumentSpanProcessor

    server = tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=attributes)
    child = tracer.start_span("SELECT", attributes={"db.system": "sqlite"})
    server.end()
    child.end()
    ours = PyinstrumentSpanProcessor(sampling_rate=0.0)
    noop = SpanProcessor()

    def hooks(processor: Any, span: Any) -> Callable[[], float]:
        on_start, on_ending, on_end = processor.on_start, processor._on_ending, processor.on_end

        def loop() -> float:
            started = time.thread_time()
            for _ in range(20_000):
                on_start(span, None)
                on_ending(span)
                on_end(span)
            return (time.thread_time() - started) / 20_000 * 1e6

        return loop

    loops = {
        "noop_server": hooks(noop, server),
        "ours_server": hooks(ours, server),
        "noop_child": hooks(noop, child),
        "ours_child": hooks(ours, child),
    }
    best = {name: float("inf") for name in loops}
    for _ in range(15):
        for name, loop in loops.items():
            best[name] = min(best[name], loop())
    return {
        "unprofiled_hooks_us": best["ours_server"] - best["noop_server"],
        "child_hooks_us": best["ours_child"] - best["noop_child"],
    }


def fixed_costs() -> dict[str, float]:
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_pyinstrument_processor import PyinstrumentSpanProcessor
    from otel_pyinstrument_processor.active_profile import StoppedProfile
    from otel_pyinstrument_processor.processor_stats import ProcessorStats, RateLimitedLog
    from otel_pyinstrument_processor.profile_attributes import ProfileAttributes
    from otel_pyinstrument_processor.pruning import PruneOptions, prune
    from otel_pyinstrument_processor.request_metrics import RequestMetrics
    from otel_pyinstrument_processor.tree_builder import (
        StackAggregator,
        top_of_tree,
        tree_from_aggregator,
    )
    from otel_pyinstrument_processor.tree_encoding import STEPS_AFTER_BUILD, encode_aggregated
    from otel_pyinstrument_processor.wire import DEFAULT_MAX_BYTES, encode_profile

    def per_call(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
        # CPU time of this (the request's) thread: on a shared machine wall time mostly
        # measures the other processes; a background sampling thread is not counted here.
        best = float("inf")
        for _ in range(repeats):
            started = time.thread_time()
            for _ in range(n):
                fn()
            best = min(best, (time.thread_time() - started) / n)
        return best

    def tracer_with(*processors: Any) -> Any:
        provider = TracerProvider()
        for processor in processors:
            provider.add_span_processor(processor)
        return provider.get_tracer("bench")

    attributes = {"url.path": "/api/x", "http.request.method": "GET"}
    plain = tracer_with()
    rate0 = tracer_with(PyinstrumentSpanProcessor(sampling_rate=0.0))
    rate1 = tracer_with(PyinstrumentSpanProcessor(sampling_rate=1.0, profiler_mode="pyinstrument"))
    sampler = tracer_with(PyinstrumentSpanProcessor(sampling_rate=1.0, profiler_mode="sampler"))
    child_tracer = rate0

    def span(tracer: Any) -> Callable[[], None]:
        def make() -> None:
            with tracer.start_as_current_span(
                "GET /x", kind=SpanKind.SERVER, attributes=attributes
            ):
                pass

        return make

    def sleepy_span_cpu(tracer: Any) -> float:
        """CPU seconds of this thread in the span's start and end, not in its body."""
        began = time.thread_time()
        span = tracer.start_span("GET /orders", kind=SpanKind.SERVER, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        started = time.thread_time()
        sleepy_handler()
        ending = time.thread_time()
        context.detach(token)
        span.end()
        return (started - began) + (time.thread_time() - ending)

    def child_span() -> None:
        with child_tracer.start_as_current_span("SELECT", attributes={"db.system": "sqlite"}):
            pass

    class Layer:
        def call(self, depth: int, fn: Callable[[], None]) -> None:
            if depth:
                return self.call(depth - 1, fn)
            return fn()

    def under_layers(fn: Callable[[], None]) -> Callable[[], None]:
        # A web server's stack above the span: ~30 more frames, methods, made per request.
        return lambda: Layer().call(30, fn)

    # Interleaved, best of 9 short loops each: the pairs being compared see the same load.
    loops = {
        "otel_span_us": (span(plain), 5000),
        "rate0_span_us": (span(rate0), 5000),
        "child_span_rate0_us": (child_span, 5000),
        "profiled_empty_span_us": (span(rate1), 500),
        "sampler_empty_span_us": (span(sampler), 2000),
        "otel_deep_span_us": (under_layers(span(plain)), 2000),
        "profiled_deep_span_us": (under_layers(span(rate1)), 500),
    }
    results = {name: float("inf") for name in loops}
    for _ in range(9):
        for name, (fn, n) in loops.items():
            results[name] = min(results[name], per_call(fn, n, repeats=1) * 1e6)
    # A request that carries a tree: the body sleeps ~36 ms at the bottom of a few nested
    # calls (the sampler takes 3-4 samples), and the request thread's CPU is measured around
    # the span's start and around its end only (the body's own CPU, timer wake-ups included,
    # is left out: on this VM it is 100-300 µs and noisy). Against OTel alone that is the
    # whole fixed cost: start + stop + build + prune + encode + attributes. (The sampling
    # thread's own CPU is not in this figure.)
    tree_loops = {
        "otel_tree_span_us": plain,
        "sampler_tree_span_us": sampler,
        "profiled_tree_span_us": rate1,
    }
    for name in tree_loops:
        results[name] = float("inf")
    for _ in range(5):
        for name, tracer in tree_loops.items():
            costs = [sleepy_span_cpu(tracer) for _ in range(8)]
            results[name] = min(results[name], sum(costs) / len(costs) * 1e6)
    results["sampler_tree_fixed_us"] = (
        results["sampler_tree_span_us"] - results["otel_tree_span_us"]
    )
    results["profiled_tree_fixed_us"] = (
        results["profiled_tree_span_us"] - results["otel_tree_span_us"]
    )
    results["unprofiled_extra_us"] = results["rate0_span_us"] - results["otel_span_us"]
    results.update(unprofiled_hooks(tracer_with(), attributes))
    results["profiled_fixed_us"] = results["profiled_empty_span_us"] - results["otel_span_us"]
    results["profiled_deep_fixed_us"] = (
        results["profiled_deep_span_us"] - results["otel_deep_span_us"]
    )
    results["sampler_fixed_us"] = results["sampler_empty_span_us"] - results["otel_span_us"]

    from pyinstrument.session import Session

    from otel_pyinstrument_processor.hook_profile import HookProfile

    # A ~50 ms request's samples as the pyinstrument mode takes them (pyinstrument's call
    # hook every 1 ms; each sample aggregated into the tree as it comes, on the request's
    # thread: timed apart as hook_aggregate_us).
    # Warm up first: the first call imports sqlite3, ~10 more samples and three times the
    # nodes (importlib), which a request does not do (before the fifth pass the pyinstrument
    # mode's figure included that import, the sampler mode's did not).
    mixed_app_like_work()
    hook = HookProfile(interval=0.001, strict=False, max_duration=None, use_timing_thread=None)
    hook.start(sys._getframe())
    mixed_app_like_work()
    hook_records = hook.stop()
    # The processor's own path from a stopped profile to the attributes (finish the tree,
    # prune, encode), as profile_attributes.ProfileAttributes runs it.
    turn_into_attributes = ProfileAttributes(
        min_share=0.005,
        slow_threshold=0.0,
        track_memory=False,
        stats=ProcessorStats(),
        log=RateLimitedLog(logging.getLogger("bench")),
    )
    metrics = RequestMetrics(track_memory=False)

    def encode_stopped(stopped: StoppedProfile) -> Callable[[], None]:
        def encode() -> None:
            attributes = turn_into_attributes.of(stopped, metrics, [], lambda: DEFAULT_MAX_BYTES)
            assert "pystrument.profile.tree" in attributes

        return encode

    def aggregate_one_by_one(records: list[tuple[list[str], float]]) -> None:
        # As HookProfile.saw_call_stack does, sample by sample.
        aggregator = StackAggregator()
        for stack, elapsed in records:
            aggregator.add(stack, elapsed)

    prefixes = tuple(Session.current_sys_prefixes())
    hook_stack = hook.start_call_stack()
    encode_hooked = encode_stopped(
        StoppedProfile(
            hook_records, hook_stack, 0.05, 0.001, False, prefixes, None, hook.aggregator
        )
    )
    # The same samples built into a tree only at stop, as the pyinstrument mode did before
    # the fifth pass (the A/B of the aggregation's move, same samples, same process).
    encode_records = encode_stopped(
        StoppedProfile(hook_records, hook_stack, 0.05, 0.001, False, prefixes, None)
    )
    results["hook_samples"] = float(len(hook_records))
    results["hook_aggregate_us"] = per_call(lambda: aggregate_one_by_one(hook_records), 200) * 1e6
    results["build_prune_encode_us"] = per_call(encode_hooked, 200) * 1e6
    results["records_build_prune_encode_us"] = per_call(encode_records, 200) * 1e6

    # The same work sampled by the sampling thread every 10 ms (what sampler mode builds).
    from otel_pyinstrument_processor.stack_sampler import shared_sampler

    owner = object()
    request = shared_sampler().begin(owner, 0.01, sys._getframe())
    mixed_app_like_work()
    records = shared_sampler().end(request)
    shared_sampler().release(owner)
    # As in the processor: the sampling thread aggregated the samples as it took them
    # (timed apart: sampler_thread_aggregate_us), the request's thread finishes the tree,
    # prunes and encodes it.
    aggregator = StackAggregator()
    aggregator.add_all(records)
    encode_sampled = encode_stopped(
        StoppedProfile(
            records, request.start_call_stack, 0.05, 0.01, False, prefixes, None, aggregator
        )
    )
    results["sampler_thread_aggregate_us"] = (
        per_call(lambda: StackAggregator().add_all(records), 200) * 1e6
    )

    results["sampler_samples"] = float(len(records))
    results["sampler_build_prune_encode_us"] = per_call(encode_sampled, 200) * 1e6

    # The sixth pass's A/B, same samples, same process, interleaved: the tree at stop by
    # the node path (CallTreeNodes, pruning steps, encode_profile: the processor's path
    # until then) against the one walk over the builders (tree_encoding). Also for a
    # request whose work runs under 30 more frames (a middleware chain: 30 more nodes).
    hook_deep = HookProfile(interval=0.001, strict=False, max_duration=None, use_timing_thread=None)
    hook_deep.start(sys._getframe())
    Layer().call(30, mixed_app_like_work)
    deep_records = hook_deep.stop()
    results["deep_hook_samples"] = float(len(deep_records))
    results["deep_hook_aggregate_us"] = (
        per_call(lambda: aggregate_one_by_one(deep_records), 200) * 1e6
    )
    options = PruneOptions(min_share=0.005, library_prefixes=prefixes)
    trees = {
        "tree": (hook.aggregator, hook_stack),
        "sampler_tree": (aggregator, request.start_call_stack),
        "deep_tree": (hook_deep.aggregator, hook_deep.start_call_stack()),
    }
    for name, (tree_aggregator, start_stack) in trees.items():
        assert tree_aggregator is not None

        def node_path(agg: Any = tree_aggregator, stack: Any = start_stack) -> Any:
            tree = tree_from_aggregator(agg, stack, options.min_share)
            return encode_profile(prune(tree, options, STEPS_AFTER_BUILD))

        def one_walk(agg: Any = tree_aggregator, stack: Any = start_stack) -> Any:
            return encode_aggregated(top_of_tree(agg.finish(), stack), options)

        assert node_path() == one_walk()  # the same bytes
        old = new = float("inf")
        for _ in range(9):
            old = min(old, per_call(node_path, 100, repeats=1) * 1e6)
            new = min(new, per_call(one_walk, 100, repeats=1) * 1e6)
        results[f"{name}_node_path_us"] = old
        results[f"{name}_one_walk_us"] = new
        results[f"{name}_one_walk_ratio"] = new / old
    # Back to back (hot caches): a tree-carrying request's fixed cost in each mode.
    results["sampler_tree_hot_us"] = (
        results["sampler_fixed_us"] + results["sampler_build_prune_encode_us"]
    )
    # (The aggregation runs during the request, sample by sample; it is in the sum.)
    results["profiled_tree_hot_us"] = (
        results["profiled_fixed_us"]
        + results["hook_aggregate_us"]
        + results["build_prune_encode_us"]
    )
    results.update(driven_sample_costs())
    return results


def driven_sample_costs(rounds: int = 7) -> dict[str, float]:
    """A sampler-mode request with exactly 0, 1 or 2 samples (most sampled requests of a
    1-2 ms endpoint have one): a helper thread runs the sampling pass on demand, so no
    timer decides the count (sampler_request_ab.py's requests, this checkout only). µs of
    the request thread's CPU around the span's start and its end, over OTel alone with as
    many hand-offs to the helper: each hand-off leaves the request's caches cold for its
    end, as a sampling pass does. ``sampler_1_sample_tree_us`` is the tree's own cost,
    over a request without a sample after the same hand-off."""
    from sampler_request_ab import PassDriver, requests_of, tracer_with

    from otel_pyinstrument_processor import PyinstrumentSpanProcessor
    from otel_pyinstrument_processor.stack_sampler import shared_sampler

    sampler = shared_sampler()
    # The thread ticks at its requests' 10 s (no random first offset, StackSampler.add);
    # a tick it had planned at the old interval passes during the pause.
    interval, sampler._interval = sampler._interval, 10.0
    time.sleep(0.05)
    processor = PyinstrumentSpanProcessor(
        sampling_rate=1.0, profiler_mode="sampler", sampler_interval=10.0
    )
    driver = PassDriver()
    names = ("no sample, 1 hand-off", "1 sample", "2 samples")
    sides = {
        "otel": requests_of(tracer_with(), None, driver),
        "ours": requests_of(tracer_with(processor), sampler, driver),
    }
    best = {(side, name): float("inf") for side in sides for name in names}
    try:
        for requests in sides.values():  # warm up
            for name in names:
                requests[name]()
        for _ in range(rounds):
            for side, requests in sides.items():
                for name in names:
                    best[side, name] = min(best[side, name], requests[name]())
    finally:
        processor.shutdown()
        driver.stop()
        sampler._interval = interval
    extra = {name: best["ours", name] - best["otel", name] for name in names}
    return {
        "sampler_handoff_fixed_us": extra["no sample, 1 hand-off"],
        "sampler_1_sample_fixed_us": extra["1 sample"],
        "sampler_2_samples_fixed_us": extra["2 samples"],
        "sampler_1_sample_tree_us": extra["1 sample"] - extra["no sample, 1 hand-off"],
        "sampler_2_samples_tree_us": extra["2 samples"] - extra["no sample, 1 hand-off"],
    }


def no_sample_steps(rounds: int = 7) -> dict[str, float]:
    """Where a sampler-mode profiled request that gets no sample spends its CPU: the span's
    extra over OTel alone, whole and with one step at a time replaced by a no-op (an
    ablation: what each step costs in place, caches and call overhead included).

    The sampling thread ticks every 10 s here, so no request is sampled. The steps are
    replaced by patching the processor's modules; each is restored before the next.
    """
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind
    from sampler_request_ab import ATTRIBUTES, tracer_with

    import otel_pyinstrument_processor.active_profile as active_profile
    import otel_pyinstrument_processor.processor as processor_module
    import otel_pyinstrument_processor.request_profile as request_profile
    import otel_pyinstrument_processor.stack_sampler as stack_sampler
    from otel_pyinstrument_processor import PyinstrumentSpanProcessor

    # What the Flask instrumentation puts on a SERVER span, roughly.
    attributes = ATTRIBUTES

    processor = PyinstrumentSpanProcessor(
        sampling_rate=1.0, profiler_mode="sampler", sampler_interval=10.0
    )

    def request(tracer: Any) -> Callable[[], None]:
        def make() -> None:
            with tracer.start_as_current_span(
                "GET /x", kind=SpanKind.SERVER, attributes=attributes
            ) as span:
                span.set_attribute("http.response.status_code", 200)

        return make

    def per_call(fn: Callable[[], None], n: int = 3000) -> float:
        started = time.thread_time()
        for _ in range(n):
            fn()
        return (time.thread_time() - started) / n * 1e6

    def instrumented_request(tracer: Any) -> Callable[[], None]:
        # As the Flask, WSGI and Django instrumentations start their SERVER span: start_span
        # from a plain function, then use_span (no generator between the span and the app).
        def make() -> None:
            span = tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=attributes)
            with trace.use_span(span, end_on_exit=True):
                span.set_attribute("http.response.status_code", 200)

        return make

    plain, profiled = request(tracer_with()), request(tracer_with(processor))
    profiled_tracer = tracer_with(processor)
    plain_instrumented = instrumented_request(tracer_with())
    profiled_instrumented = instrumented_request(profiled_tracer)

    class NoThreadClock:
        thread_time = staticmethod(lambda: 0.0)
        perf_counter = staticmethod(time.perf_counter)

    class NoMarker:
        # The context variable's set and reset replaced (get stays: every span reads it).
        get = staticmethod(request_profile.current_profile.get)
        set = staticmethod(lambda marker: None)
        reset = staticmethod(lambda token: None)

    removals: dict[str, list[tuple[Any, str, Any]]] = {
        "whole": [],
        "stem anchor (frames looked at)": [
            (active_profile, "anchor_at_span_start", lambda request, depth: None)
        ],
        "sampler add + end (anchor excluded)": [
            (stack_sampler.StackSampler, "add", lambda self, user, request: None),
            (stack_sampler.StackSampler, "end", lambda self, request: []),
        ],
        "attach (header check + 2 attributes)": [
            (processor_module, "write_ending_attributes", lambda span, a, key: True)
        ],
        "thread CPU clock, 2 reads": [
            (active_profile, "time", NoThreadClock),
            (processor_module, "thread_time", lambda: 0.0),
        ],
        "stats counters, 2": [
            (processor, "_count_started", lambda: 0),
            (processor._profile_attributes, "_count_empty", lambda: 0),
        ],
        "context marker set + reset": [(processor_module, "current_profile", NoMarker)],
    }
    for fn in (plain, profiled):
        per_call(fn, 2000)
    best = {name: float("inf") for name in ("otel", "otel_use_span", "use_span", *removals)}
    for _ in range(rounds):
        best["otel"] = min(best["otel"], per_call(plain))
        best["otel_use_span"] = min(best["otel_use_span"], per_call(plain_instrumented))
        best["use_span"] = min(best["use_span"], per_call(profiled_instrumented))
        for name, patches in removals.items():
            saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
            for owner, attr, value in patches:
                setattr(owner, attr, value)
            try:
                best[name] = min(best[name], per_call(profiled))
            finally:
                for owner, attr, value in saved:
                    setattr(owner, attr, value)
    processor.shutdown()
    whole = best["whole"] - best["otel"]
    steps = {
        "otel_span_us": best["otel"],
        "no_sample_extra_us": whole,
        "no_sample_extra_use_span_us": best["use_span"] - best["otel_use_span"],
    }
    for name in removals:
        if name != "whole":
            steps[name] = whole - (best[name] - best["otel"])
    return steps


def sleepy_handler() -> None:
    sleepy_service()


def sleepy_service() -> None:
    sleepy_query()
    sleepy_render()
    sleepy_cache()


def sleepy_query() -> None:
    time.sleep(0.012)


def sleepy_render() -> None:
    time.sleep(0.012)


def sleepy_cache() -> None:
    time.sleep(0.012)


def mixed_app_like_work() -> None:
    import json as json_module
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(3000)])
    rows = db.execute("SELECT * FROM t").fetchall()
    json_module.dumps([{"id": i, "v": v} for i, v in rows] * 3)
    spin(0.015)
    time.sleep(0.02)


# -- report -----------------------------------------------------------------------------


def best_of(results: list[dict[str, float]]) -> dict[str, float]:
    """Best round per measure: on a shared machine a disturbance only makes a figure worse."""
    best = dict(results[0])
    for result in results[1:]:
        for measure in ("p50", "p99", "cpu", "background_cpu"):
            best[measure] = min(best[measure], result[measure])
        best["rps"] = max(best["rps"], result["rps"])
    return best


def print_increments(
    endpoint: str,
    variants: Sequence[str],
    runs: dict[tuple[str, str], list[dict[str, float]]],
    best: dict[tuple[str, str], dict[str, float]],
) -> None:
    """Each profiler's CPU per request over its own tracing baseline, side by side.

    ``best``: best round of each against best round of its baseline. ``median`` and
    ``range``: the same ratio within each round (both ran in that round), median, lowest
    and highest. The A/A row (OTel only against itself) is this run's noise: increments
    within its range are ties.
    """
    rows = [v for v in variants if v in PROFILER_BASELINES and (v, endpoint) in best]
    if not rows:
        return
    print(f"\n{endpoint}  profiler CPU per request over its own tracing (lower is better)")
    print(
        f"{'profiler':<18}{'over':<15}{'best':>9}{'median':>9}{'range':>20}"
        f"{'µs/req':>9}{'samples/req':>13}"
    )
    for variant in rows:
        baseline = PROFILER_BASELINES[variant]
        if (baseline, endpoint) not in best:
            print(f"{variant:<18}{baseline:<15}  (baseline did not run)")
            continue
        overall = best[(variant, endpoint)]["cpu"] / best[(baseline, endpoint)]["cpu"] - 1
        # Per round, both ran in it: the ratio, and the absolute increment (the baselines
        # differ: Sentry's own tracing costs more than OTel's, so the same profiler cost is
        # a smaller percentage over Sentry's).
        pairs = list(zip(runs[(variant, endpoint)], runs[(baseline, endpoint)], strict=False))
        paired = sorted(mine["cpu"] / theirs["cpu"] - 1 for mine, theirs in pairs)
        added = sorted(mine["cpu"] - theirs["cpu"] for mine, theirs in pairs)
        spread = f"{paired[0]:+.1%} .. {paired[-1]:+.1%}"
        median = paired[len(paired) // 2]
        added_us = added[len(added) // 2] * 1e6
        label = f"{variant} (A/A)" if variant == "otel_again" else variant
        samples = sorted(r.get("samples", 0.0) for r in runs[(variant, endpoint)])
        print(
            f"{label:<18}{baseline:<15}{overall:>+9.1%}{median:>+9.1%}{spread:>20}"
            f"{added_us:>+9.0f}{samples[len(samples) // 2]:>13.2f}"
        )


def chosen_variants(
    requested: str | None,
    variants: Sequence[str],
    baselines: dict[str, str],
    error: Callable[[str], Any],
) -> tuple[str, ...]:
    """``variants`` narrowed to the comma-separated ``requested`` (all when None), in their
    order; OTel only, its A/A twin and the baseline of every profiler asked for always run.
    An unknown name goes to ``error`` (argparse's, which exits)."""
    if not requested:
        return tuple(variants)
    wanted = {"otel", "otel_again", *requested.split(",")}
    unknown = wanted - set(variants)
    if unknown:
        error(f"unknown variants: {', '.join(sorted(unknown))}")
    wanted |= {baselines[v] for v in wanted if v in baselines}
    return tuple(v for v in variants if v in wanted)


# -- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="a third of the requests")
    parser.add_argument(
        "--variants",
        help=f"comma-separated subset of {','.join(VARIANTS)} (otel is always run)",
    )
    parser.add_argument("--no-requests", action="store_true", help="only the fixed costs (~10 s)")
    parser.add_argument(
        "--steps",
        action="store_true",
        help="only the per-step cost of a sampler-mode request that gets no sample (~20 s)",
    )
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        variant, endpoint, count = args.worker
        print(json.dumps(run_worker(variant, endpoint, int(count))))
        return 0
    if args.steps:
        steps = no_sample_steps()
        print("sampler mode, a profiled request that gets no sample: CPU µs of its thread")
        print(f"  {'OTel SERVER span alone':<40}{steps.pop('otel_span_us'):>8.1f}")
        print(f"  {'extra with the processor (whole)':<40}{steps.pop('no_sample_extra_us'):>8.1f}")
        print(
            f"  {'the same, span from start_span+use_span':<40}"
            f"{steps.pop('no_sample_extra_use_span_us'):>8.1f}"
        )
        print("  of which, removing one step at a time saves:")
        for name, saved in steps.items():
            print(f"    {name:<38}{saved:>8.1f}")
        return 0

    variants = chosen_variants(args.variants, VARIANTS, PROFILER_BASELINES, parser.error)
    if args.no_requests:
        variants = ()
    began = time.monotonic()
    if variants:
        print(f"work: {units_per_ms()} records a millisecond (calibrated, no profiler)")
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    failures: dict[str, str] = {}
    for round_index in range(args.rounds):
        # Each round starts one variant further on: a variant's place in the sequence
        # (e.g. first after a switch of endpoint) otherwise biases it in every round.
        shift = round_index % max(1, len(variants))
        ordered = variants[shift:] + variants[:shift]
        for endpoint, count in ENDPOINTS.items():
            count = max(10, count // 3) if args.quick else count
            for variant in ordered:
                if variant in failures:
                    continue
                result = run_variant(variant, endpoint, count)
                if isinstance(result, str):
                    failures[variant] = result
                    continue
                runs.setdefault((variant, endpoint), []).append(result)

    best = {key: best_of(results) for key, results in runs.items()}
    for endpoint in ENDPOINTS if variants else ():
        base = best.get(("otel", endpoint))
        print(f"\n{endpoint}  (ratios to OTel only; lower latency / higher throughput is better)")
        header = ("p50 ms", "p99 ms", "req/s", "cpu ms", "bg µs", "p50 x", "p99 x", "thru x")
        header += ("cpu x",)
        print(f"{'variant':<18}" + "".join(f"{h:>9}" for h in header))
        for variant in variants:
            r = best.get((variant, endpoint))
            if r is None:
                print(f"{variant:<18}  did not run: {failures.get(variant, '?')}")
                continue
            ratios = (
                [r[m] / base[m] for m in ("p50", "p99", "rps", "cpu")]
                if base
                else [float("nan")] * 4
            )
            print(
                f"{variant:<18}{r['p50'] * 1e3:>9.3f}{r['p99'] * 1e3:>9.3f}{r['rps']:>9.0f}"
                f"{r['cpu'] * 1e3:>9.3f}{r['background_cpu'] * 1e6:>9.1f}"
                + "".join(f"{ratio:>9.3f}" for ratio in ratios)
            )
        print_increments(endpoint, variants, runs, best)

    costs = fixed_costs()
    print("\nfixed costs, µs of the calling thread's CPU (best of 9 interleaved loops)")
    for name, value in costs.items():
        print(f"  {name:<26}{value:>10.2f}")
    print(f"\n(total {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
