"""A/B of a sampler-mode profiled request's own cost: an earlier revision of the processor
against this checkout, in one process, interleaved.

The earlier revision's ``otel_pyinstrument_processor`` is taken with ``git archive`` into a
temporary directory and imported first (``tree_encoding_ab.load_revision``); its modules
are then set aside and this checkout's package is imported (each module keeps the objects
it imported, so both work side by side, each with its own sampling thread). Three tracers,
OTel alone and OTel + each revision's processor (``profiler_mode="sampler"``), serve the
same requests, interleaved, best of N rounds (CPU time of the request's thread):

- ``no sample``: a request the sampling thread never samples (it ticks every 10 s), the
  span started with ``start_as_current_span`` and, as the Flask, WSGI and Django
  instrumentations start theirs, with ``start_span`` + ``use_span``;
- ``1 sample`` / ``2 samples``: the same request, during which a helper thread runs the
  sampler's pass exactly once or twice (deterministic: no timer decides how many samples
  the request gets). Only the request thread's CPU around the span's start and around its
  end is counted (the body waits for the helper): that is start + stop + finishing,
  pruning and encoding the tree + attributes; the pass itself runs on the helper, as it
  runs on the sampling thread. The request's end comes right after the hand-off, its
  caches cold: ``no sample, 1 hand-off`` is the same request with a helper that does
  nothing, the baseline of the tree's own cost.

Run from the repository root:
    PYTHONPATH=. .venv/bin/python benchmarks/sampler_request_ab.py --before main [--rounds 9]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tree_encoding_ab import PACKAGE, load_revision

_NO_TICK = 10.0  # the sampling thread's interval: it never ticks during a request

# What the Flask instrumentation puts on a SERVER span, roughly.
ATTRIBUTES = {
    "url.path": "/api/x",
    "url.scheme": "http",
    "http.request.method": "GET",
    "http.route": "/api/x",
    "server.address": "localhost",
    "server.port": 80,
    "client.address": "127.0.0.1",
    "network.peer.address": "127.0.0.1",
    "network.protocol.version": "1.1",
    "user_agent.original": "bench",
}


class _NoPass:
    """A sampler whose pass does nothing (see ``handler``)."""

    @staticmethod
    def _sample() -> None:
        pass


class PassDriver:
    """A helper thread that runs a sampler's sampling pass when asked, and waits for it:
    the request gets exactly as many samples as it asks for."""

    def __init__(self) -> None:
        self._asked = threading.Event()
        self._done = threading.Event()
        self._sampler: Any = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            self._asked.wait()
            self._asked.clear()
            sampler = self._sampler
            if sampler is None:
                return
            sampler._sample()
            self._done.set()

    def sample(self, sampler: Any) -> None:
        self._sampler = sampler
        self._done.clear()
        self._asked.set()
        self._done.wait()

    def stop(self) -> None:
        self._sampler = None
        self._asked.set()
        self._thread.join(timeout=5)


def tracer_with(*processors: Any) -> Any:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    return provider.get_tracer("bench")


def requests_of(tracer: Any, sampler: Any, driver: PassDriver) -> dict[str, Callable[[], float]]:
    """The timed requests for one tracer: each returns µs of this thread's CPU."""
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind

    def handler(samples: int) -> None:
        # The body's own CPU is not counted, but its hand-offs to the helper leave the
        # request's caches cold for its end: OTel alone gets as many (the helper doing
        # nothing), and "samples 0" is one hand-off without a sample.
        if samples == 0 or sampler is None:
            for _ in range(max(1, samples)):
                driver.sample(_NoPass)
            return
        for _ in range(samples):
            driver.sample(sampler)

    def start_as_current(n: int = 2000) -> float:
        started = time.thread_time()
        for _ in range(n):
            with tracer.start_as_current_span(
                "GET /x", kind=SpanKind.SERVER, attributes=ATTRIBUTES
            ) as span:
                span.set_attribute("http.response.status_code", 200)
        return (time.thread_time() - started) / n * 1e6

    def start_and_use(n: int = 2000) -> float:
        started = time.thread_time()
        for _ in range(n):
            span = tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=ATTRIBUTES)
            with trace.use_span(span, end_on_exit=True):
                span.set_attribute("http.response.status_code", 200)
        return (time.thread_time() - started) / n * 1e6

    def sampled(samples: int, n: int = 200) -> Callable[[], float]:
        def run() -> float:
            total = 0.0
            for _ in range(n):
                began = time.thread_time()
                span = tracer.start_span("GET /x", kind=SpanKind.SERVER, attributes=ATTRIBUTES)
                token = context.attach(trace.set_span_in_context(span))
                body = time.thread_time()
                handler(samples)
                body_end = time.thread_time()
                span.set_attribute("http.response.status_code", 200)
                context.detach(token)
                span.end()
                total += (body - began) + (time.thread_time() - body_end)
            return total / n * 1e6

        return run

    return {
        "no sample (start_as_current_span)": start_as_current,
        "no sample (start_span + use_span)": start_and_use,
        "no sample, 1 hand-off": sampled(0),
        "1 sample": sampled(1),
        "2 samples": sampled(2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="main", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (best of)")
    args = parser.parse_args(argv)

    driver = PassDriver()
    with tempfile.TemporaryDirectory() as directory:
        before = load_revision(args.before, directory, ("stack_sampler",))
        revisions = {
            "before": (before[""], before["stack_sampler"]),
            "after": (
                importlib.import_module(PACKAGE),
                importlib.import_module(f"{PACKAGE}.stack_sampler"),
            ),
        }
        sides = {"otel": requests_of(tracer_with(), None, driver)}
        processors = []
        for side, (package, stack_sampler) in revisions.items():
            processor = package.PyinstrumentSpanProcessor(
                sampling_rate=1.0, profiler_mode="sampler", sampler_interval=_NO_TICK
            )
            processors.append(processor)
            sampler = stack_sampler.shared_sampler()
            # The thread ticks at the requests' 10 s from the start: a request's first
            # sample is not put off by a random part of its interval (StackSampler.begin).
            sampler._interval = _NO_TICK
            sides[side] = requests_of(tracer_with(processor), sampler, driver)
        names = list(sides["otel"])
        for requests in sides.values():  # warm up
            for name in names:
                requests[name]()
        best = {(side, name): float("inf") for side in sides for name in names}
        for _ in range(args.rounds):
            for side, requests in sides.items():
                for name in names:
                    best[side, name] = min(best[side, name], requests[name]())
        for processor in processors:
            processor.shutdown()
    driver.stop()
    print(f"µs of the request thread's CPU, best of {args.rounds} interleaved rounds")
    print(f"{'':<36}{'OTel':>8}{'before':>9}{'after':>9}{'saved':>8}")
    for name in names:
        otel = best["otel", name]
        old, new = best["before", name] - otel, best["after", name] - otel
        print(f"{name:<36}{otel:>8.1f}{old:>+9.1f}{new:>+9.1f}{old - new:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
