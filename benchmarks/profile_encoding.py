"""Measure the call-tree wire format on a realistic request: size, compression, cost.

A small Flask app (OpenTelemetry Flask instrumentation + PyinstrumentSpanProcessor) serves a
~50 ms request that queries SQLite, computes in Python, renders a Jinja template, serializes
JSON and waits on a pretend upstream. The script prints:

- the encoded attribute size and the compression ratio against the uncompressed JSON payload
  of the same tree (and against a naive nested JSON with key names, for scale);
- the time to build + prune + encode one profile, and to decode it (time.perf_counter over
  many iterations);
- request latency with profiling on vs off.

Run from the repository root (needs the `examples` extra: flask):
    PYTHONPATH=. .venv/bin/python benchmarks/profile_encoding.py
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time

from flask import Flask, jsonify, render_template_string
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pyinstrument import Profiler

from otel_pyinstrument_processor import (
    PruneOptions,
    PyinstrumentSpanProcessor,
    attributes,
    build_call_tree,
    decode_profile,
    encode_profile,
    iter_nodes,
    prune,
)
from otel_pyinstrument_processor.calltree import copy_tree
from otel_pyinstrument_processor.wire import payload_json

TEMPLATE = """
<table>{% for row in rows %}
<tr><td>{{ row.id }}</td><td>{{ row.name|title }}</td><td>{{ "%.2f"|format(row.total) }}</td></tr>
{% endfor %}</table>
"""


def make_app() -> Flask:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT, total REAL)")
    db.executemany(
        "INSERT INTO orders VALUES (?, ?, ?)", [(i, f"customer {i}", i * 1.5) for i in range(3000)]
    )
    app = Flask(__name__)

    def load_orders() -> list[dict]:
        rows = db.execute("SELECT id, name, total FROM orders").fetchall()
        return [{"id": i, "name": n, "total": t} for i, n, t in rows]

    def score(orders: list[dict]) -> float:
        return sum(math.sqrt(o["total"]) * math.log1p(o["id"]) for o in orders for _ in range(3))

    def call_upstream() -> None:
        time.sleep(0.02)  # a pretend upstream HTTP call

    @app.get("/report")
    def report():
        orders = load_orders()
        html = render_template_string(TEMPLATE, rows=orders[:400])
        call_upstream()
        return jsonify(score=score(orders), html_bytes=len(html), orders=orders[:300])

    return app


def serve(processor: PyinstrumentSpanProcessor) -> tuple[Flask, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app, exporter


def naive_json(tree) -> bytes:
    """A nested JSON with key names: what one would write without the compact layout."""

    def as_dict(node):
        return {
            "function": node.function,
            "file": node.file,
            "line": node.line,
            "total_time": node.total_time,
            "self_time": node.self_time,
            "sample_count": node.sample_count,
            "children": [as_dict(c) for c in node.children],
        }

    return json.dumps(as_dict(tree)).encode()


def per_profile_ms(
    function, inputs: list, repeats: int = 7, rounds: int = 20
) -> tuple[float, float]:
    """(best, median) over `repeats` of the mean time per input, in ms; as timeit does, the
    best repeat is the least disturbed by other load on the machine."""
    for item in inputs:
        function(item)  # warm up
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            for item in inputs:
                function(item)
        means.append((time.perf_counter() - start) / (rounds * len(inputs)) * 1000)
    return min(means), statistics.median(means)


def timed_get(client, path: str = "/report") -> float:
    start = time.perf_counter()
    assert client.get(path).status_code == 200
    return time.perf_counter() - start


def main() -> None:
    # pyinstrument's hook: the tree this benchmark has measured since issue 2.
    app, exporter = serve(PyinstrumentSpanProcessor(profiler_mode="pyinstrument"))
    profiled = app.test_client()
    quiet_app, _ = serve(PyinstrumentSpanProcessor(sampling_rate=0.0))
    quiet = quiet_app.test_client()
    for _ in range(5):
        timed_get(profiled)
        timed_get(quiet)
    exporter.clear()

    # Latency: the three modes interleaved, so background load hits them alike.
    latency: dict[str, list[float]] = {"off": [], "bare": [], "processor": []}
    sessions = []
    for _ in range(40):
        latency["off"].append(timed_get(quiet))
        latency["processor"].append(timed_get(profiled))
        bare = Profiler(interval=0.001, async_mode="disabled")
        start = time.perf_counter()
        bare.start()
        quiet.get("/report")
        sessions.append(bare.stop())
        latency["bare"].append(time.perf_counter() - start)

    sizes, ratios, naive_ratios, nodes, samples, durations = [], [], [], [], [], []
    for span in exporter.get_finished_spans():
        encoded = span.attributes[attributes.PROFILE_TREE]
        tree = decode_profile(encoded, span.attributes[attributes.PROFILE_FORMAT])
        sizes.append(len(encoded))
        ratios.append(len(payload_json(tree)) / len(encoded))
        naive_ratios.append(len(naive_json(tree)) / len(encoded))
        nodes.append(sum(1 for _ in iter_nodes(tree)))
        samples.append(span.attributes[attributes.PROFILE_SAMPLE_COUNT])
        durations.append(span.attributes[attributes.PROFILE_DURATION] * 1000)

    print(f"Flask request /report, {len(sizes)} profiled requests, interval 1 ms (medians)")
    print(f"  profiled duration              {statistics.median(durations):.1f} ms")
    print(f"  samples per profile            {statistics.median(samples):.0f}")
    print(f"  nodes after pruning            {statistics.median(nodes):.0f}")
    print(f"  encoded attribute size         {statistics.median(sizes):.0f} B (max {max(sizes)} B)")
    print(f"  compression vs compact JSON    {statistics.median(ratios):.2f}x "
          f"(uncompressed payload JSON bytes / encoded base64 bytes)")  # fmt: skip
    print(f"  compression vs naive JSON      {statistics.median(naive_ratios):.2f}x "
          f"(nested objects with key names)")  # fmt: skip

    # What the processor does at span end, on the 40 sessions captured above.
    options = PruneOptions(library_prefixes=tuple(sessions[0].sys_prefixes))
    raw_trees = [build_call_tree(session) for session in sessions]
    pruned = [prune(copy_tree(tree), options) for tree in raw_trees]
    encoded = [encode_profile(tree) for tree in pruned]
    raw_sizes = [len(encode_profile(tree).tree) for tree in raw_trees]
    print(f"\n{len(sessions)} captured sessions: "
          f"{statistics.median(len(s.frame_records) for s in sessions):.0f} samples, "
          f"{statistics.median(sum(1 for _ in iter_nodes(t)) for t in raw_trees):.0f} nodes "
          f"before pruning, {statistics.median(sum(1 for _ in iter_nodes(t)) for t in pruned):.0f}"
          f" after; encoded {statistics.median(raw_sizes):.0f} B unpruned, "
          f"{statistics.median(len(e.tree) for e in encoded):.0f} B pruned")  # fmt: skip
    stages = {
        "build tree from frame records": (build_call_tree, sessions),
        "copy + prune (default steps)": (lambda t: prune(copy_tree(t), options), raw_trees),
        "encode (json+zlib+base64)": (encode_profile, pruned),
        "build + prune + encode": (
            lambda s: encode_profile(prune(build_call_tree(s), options)),
            sessions,
        ),
        "decode": (lambda e: decode_profile(e.tree), encoded),
    }
    print("  per profile, ms                best     median of 7 repeats")
    for name, (function, inputs) in stages.items():
        best, median = per_profile_ms(function, inputs)
        print(f"  {name:<30} {best:6.3f}   {median:6.3f}")

    print(
        f"\nRequest latency, Flask test client, {len(latency['off'])} interleaved rounds (median)"
    )
    print(f"  profiling off                  {statistics.median(latency['off']) * 1000:.1f} ms")
    print(f"  bare pyinstrument, no OTel     {statistics.median(latency['bare']) * 1000:.1f} ms")
    print(f"  PyinstrumentSpanProcessor      "
          f"{statistics.median(latency['processor']) * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
