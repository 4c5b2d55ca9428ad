"""Receiver throughput: bare protobuf parse vs. decode+normalize vs. end to end into the store.

Payloads are realistic traces: 10 spans each (a SERVER span, DB CLIENT spans, INTERNAL spans),
about 20 attributes per span, and 1 trace in 10 carrying a real pyinstrument call tree (made
with our processor's encoder) on its SERVER span. Requests carry 50 traces (500 spans).

It prints, side by side:

1. bare upb parse (`ExportTraceServiceRequest.FromString`), spans/s on one core;
2. parse + `decode_request` (the receiver's decode and normalize), spans/s on one core, with
   the stock schema and with the receiver's faster attribute schema (`otlp_values`);
3. end to end: several concurrent gRPC exporters in a separate process send the payloads to
   a real receiver (group commit) on the embedded store; spans/s acknowledged, then the
   store's span count is checked against what was acknowledged (zero loss), and the peak of
   spans in flight against the bound (the run is an overload: senders outnumber what the
   store takes, so some exports are refused with RetryInfo and retried).

Bounded: about a minute. Run from the repository root:
    PYTHONPATH=. .venv/bin/python benchmarks/receiver_throughput.py [--seconds 20] [--senders 8]
        [--bound 2000] [--admission-wait 0.5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import tempfile
import threading
import time
from pathlib import Path

import grpc
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_receiver import GrpcOptions, TraceIngestor, build_server
from collector_receiver.batcher import BatchOptions
from collector_receiver.otlp import decode_request
from collector_receiver.otlp_values import clear_value_cache, parse_fast_request
from storage_backend import Store
from storage_backend.embedded import EmbeddedServer

# Every trace id starts with this; senders replace it per export (one bytes.replace), so each
# export carries new traces: resent ids would be deduplicated by the store, not counted.
ID_PREFIX = b"\xa7\x3c\x91\x5e\xd2\x08"
TRACES_PER_REQUEST = 50
SPANS_PER_TRACE = 10
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _call_tree() -> tuple[str, str]:
    """A real encoded call tree: pyinstrument over a little work, through our encoder."""
    from pyinstrument import Profiler

    from otel_pyinstrument_processor import build_call_tree, encode_profile

    def work() -> int:
        total = 0
        for i in range(40_000):
            total += len(str(i)) * (i % 7)
        return total + sum(sorted(random.random() for _ in range(5_000)) and [1])

    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(5):
        work()
    session = profiler.stop()
    tree = build_call_tree(session)
    assert tree is not None
    encoded = encode_profile(tree)
    return encoded.tree, encoded.format


def _attr(span, key: str, value) -> None:
    kv = span.attributes.add()
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value


def make_request(seed: int, tree: tuple[str, str]) -> ExportTraceServiceRequest:
    """One request of TRACES_PER_REQUEST realistic traces (see module doc)."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in {
        "service.name": "checkout",
        "service.version": "2.4.1",
        "service.instance.id": f"checkout-{seed % 4}",
        "host.name": "web-3",
        "process.runtime.name": "cpython",
        "process.runtime.version": "3.11.9",
        "telemetry.sdk.language": "python",
        "deployment.environment.name": "production",
    }.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.flask", "0.66b1"
    now = time.time_ns()
    for t in range(TRACES_PER_REQUEST):
        trace_id = ID_PREFIX + rng.randbytes(16 - len(ID_PREFIX))
        root_id = rng.randbytes(8)
        start = now - rng.randrange(10**9)
        order = rng.randrange(10**6)
        for i in range(SPANS_PER_TRACE):
            span = ss.spans.add()
            span.trace_id = trace_id
            span.span_id = root_id if i == 0 else rng.randbytes(8)
            span.start_time_unix_nano = start + i * 1_000_000
            span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(10**5, 5 * 10**7)
            common = {
                "thread.id": 140000 + rng.randrange(16),
                "thread.name": "MainThread",
                "code.namespace": "shop.views",
                "code.filepath": "/srv/shop/views.py",
                "code.lineno": 120 + i,
                "server.address": "shop.example.com",
                "network.protocol.version": "1.1",
            }
            if i == 0:
                span.kind = 2
                span.name = "GET /orders/<id>"
                attrs = {
                    "http.request.method": "GET",
                    "http.route": "/orders/<id>",
                    "url.path": f"/orders/{order}",
                    "url.scheme": "https",
                    "http.response.status_code": 200,
                    "client.address": f"10.0.{rng.randrange(255)}.{rng.randrange(255)}",
                    "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                    "http.request.header.x-request-id": rng.randbytes(8).hex(),
                    "server.port": 443,
                    "http.response.body.size": rng.randrange(200, 20000),
                    "pystrument.cpu_time": rng.random() / 10,
                    "enduser.id": f"user-{rng.randrange(5000)}",
                    "http.response.header.content-type": "application/json",
                }
                if t % 10 == 0:
                    attrs |= {
                        "pystrument.profile.tree": tree[0],
                        "pystrument.profile.format": tree[1],
                        "pystrument.profile.sample_count": 40,
                    }
            else:
                span.parent_span_id = root_id
                if i <= 6:
                    span.kind = 3
                    span.name = "SELECT shop.orders"
                    attrs = {
                        "db.system": "postgresql",
                        "db.namespace": "shop",
                        "db.operation.name": "SELECT",
                        "db.collection.name": "orders",
                        "db.query.text": "SELECT * FROM orders WHERE id = %s AND tenant = %s",
                        "server.port": 5432,
                        "db.response.returned_rows": rng.randrange(50),
                        "network.peer.address": "10.1.0.7",
                        "db.client.connection.pool.name": "default",
                        "db.client.connection.state": "used",
                        "db.system.name": "postgresql",
                        "db.stored_procedure.name": "",
                        "error": False,
                    }
                else:
                    span.kind = 1
                    span.name = "render orders.html"
                    attrs = {
                        "template.name": "orders.html",
                        "template.engine": "jinja2",
                        "template.cache_hit": True,
                        "template.size": rng.randrange(1000, 9000),
                        "component": "render",
                        "render.items": rng.randrange(100),
                        "render.locale": "en_US",
                        "render.theme": "default",
                        "render.partial": False,
                        "render.layout": "base.html",
                        "render.ms": rng.random() * 10,
                        "render.escaped": True,
                        "render.blocks": 4,
                    }
            for key, value in (common | attrs).items():
                _attr(span, key, value)
            span.status.code = 1 if i == 0 else 0
    return request


def rate(fn, payloads: list[bytes], spans_per_payload: int, seconds: float = 4.0) -> float:
    """Spans/s of `fn` over the payloads, best of repeated passes within `seconds`. The
    attribute cache is emptied before each pass: values unique to a request (ids,
    paths, sizes) must be decoded, as they would be in a real stream, not found cached."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        clear_value_cache()
        started = time.perf_counter()
        for payload in payloads:
            fn(payload)
        best = max(best, len(payloads) * spans_per_payload / (time.perf_counter() - started))
    return best


def _sender(target: str, key: str, payloads: list[bytes], seconds: float, threads: int, out):
    """Runs in its own process: `threads` exporters send payloads until time is up, honouring
    RetryInfo on refusals (as the OTLP exporters do). Reports acknowledged spans."""
    acked = [0] * threads
    refused = [0] * threads
    sent = [0] * threads
    stop_at = time.monotonic() + seconds
    spans = TRACES_PER_REQUEST * SPANS_PER_TRACE

    def run(i: int) -> None:
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_unary(
                EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            n = i
            while time.monotonic() < stop_at:
                # 16 bits of pid, 12 of sender, 20 of count: distinct for up to 4,096
                # senders (a sender's bits once overlapped the pid's past 16 senders, so two
                # senders could send the same traces, which the store rightly stored once).
                fresh = ((os.getpid() & 0xFFFF) << 32 | i << 20 | sent[i]).to_bytes(
                    len(ID_PREFIX), "big"
                )
                payload = payloads[n % len(payloads)].replace(ID_PREFIX, fresh)
                sent[i] += 1
                n += threads
                while True:  # one export, retried until acknowledged: no span is dropped
                    try:
                        call(payload, metadata=(("authorization", f"Bearer {key}"),), timeout=60)
                        acked[i] += spans
                        break
                    except grpc.RpcError as err:
                        refused[i] += 1
                        info = dict(err.trailing_metadata() or ()).get("google.rpc.retryinfo-bin")
                        delay = 0.5
                        if info:
                            d = RetryInfo.FromString(info).retry_delay
                            delay = d.seconds + d.nanos / 1e9
                        time.sleep(delay * random.uniform(0.5, 1.0))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((sum(acked), sum(refused), time.monotonic() - started, time.process_time()))


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc), children excluded."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def end_to_end(
    payloads: list[bytes],
    seconds: float,
    senders: int,
    bound: int,
    writers: int,
    admission_wait: float = BatchOptions().admission_wait_seconds,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        embedded = EmbeddedServer(Path(tmp) / "mongo")
        embedded.start()
        store = Store.connect(embedded.url, "bench")
        store.ensure_schema()
        try:
            # The store alone, as a ceiling: Store.ingest_many of already-decoded requests.
            direct, _ = store.projects.create("direct")
            best_direct = 0.0
            for rep in range(3):
                items = [
                    (direct, decode_request(parse_fast_request(
                        p.replace(ID_PREFIX, rep.to_bytes(len(ID_PREFIX), "big"))
                    )).batch)
                    for p in payloads
                ]  # fmt: skip
                started = time.perf_counter()
                store.ingest_many(items)
                spans = len(payloads) * TRACES_PER_REQUEST * SPANS_PER_TRACE
                best_direct = max(best_direct, spans / (time.perf_counter() - started))
            _, key = store.projects.create("bench")
            ingestor = TraceIngestor(
                store,
                batch_options=BatchOptions(
                    max_inflight_spans=bound,
                    writers=writers,
                    admission_wait_seconds=admission_wait,
                ),
            )
            server, port = build_server(ingestor, GrpcOptions(host="127.0.0.1", port=0))
            server.start()
            peak = 0
            sampling = True

            def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, ingestor.writer.inflight_spans)
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            queue: multiprocessing.Queue = multiprocessing.Queue()
            proc = multiprocessing.Process(
                target=_sender,
                args=(f"127.0.0.1:{port}", key, payloads, seconds, senders, queue),
            )
            store_pid = embedded._proc.pid  # a benchmark may look inside
            cpu_before = (_cpu_seconds(os.getpid()), _cpu_seconds(store_pid))
            proc.start()
            acked, refused, elapsed, senders_cpu = queue.get(timeout=seconds + 180)
            cpu_after = (_cpu_seconds(os.getpid()), _cpu_seconds(store_pid))
            proc.join(30)
            sampling = False
            server.stop(5).wait(10)
            ingestor.close(30)
            stored = sum(
                d["span_count"] for d in store.collection("spans").find({}, {"span_count": 1})
            )
            batches = ingestor.metrics.batch_requests
            return {
                "acked": acked,
                "stored": stored - 3 * len(payloads) * TRACES_PER_REQUEST * SPANS_PER_TRACE,
                "store_only": best_direct,
                "refused": refused,
                "elapsed": elapsed,
                "peak_inflight": peak,
                "writes": batches.count(),
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "receiver_cpu": cpu_after[0] - cpu_before[0],
                "store_cpu": cpu_after[1] - cpu_before[1],
                "senders_cpu": senders_cpu,
            }
        finally:
            store.client.close()
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="end-to-end run length")
    parser.add_argument(
        "--senders", type=int, default=8, help="concurrent gRPC exporters (at most 4096)"
    )
    parser.add_argument(
        "--bound",
        type=int,
        default=2_000,
        help="max_inflight_spans (default: half of what the exporters send at once: 2x overload)",
    )
    parser.add_argument("--writers", type=int, default=2, help="group-commit writer threads")
    parser.add_argument(
        "--admission-wait",
        type=float,
        default=BatchOptions().admission_wait_seconds,
        help="seconds an export over the bound waits for room before it is refused "
        f"(default {BatchOptions().admission_wait_seconds}; 0 = refused at once)",
    )
    args = parser.parse_args()

    tree = _call_tree()
    requests = [make_request(seed, tree) for seed in range(8)]
    payloads = [r.SerializeToString() for r in requests]
    per_request = TRACES_PER_REQUEST * SPANS_PER_TRACE
    print(
        f"payload: {per_request} spans/request, "
        f"{sum(len(p) for p in payloads) / len(payloads) / 1024:.0f} KiB/request, "
        f"call tree {len(tree[0])} B on 1 trace in 10; load average {os.getloadavg()[0]:.1f}"
    )

    parse = rate(ExportTraceServiceRequest.FromString, payloads, per_request)
    stock = rate(
        lambda p: decode_request(ExportTraceServiceRequest.FromString(p)), payloads, per_request
    )
    full = rate(lambda p: decode_request(parse_fast_request(p)), payloads, per_request)
    print(f"{'bare protobuf parse (upb)':<34}{parse:>12,.0f} spans/s   1.00x")
    print(f"{'parse + decode, stock schema':<34}{stock:>12,.0f} spans/s   {stock / parse:.2f}x")
    print(
        f"{'parse + decode + normalize':<34}{full:>12,.0f} spans/s   {full / parse:.2f}x"
        "   (what the receiver runs: repeated-bytes schema + pair cache)"
    )

    e2e = end_to_end(
        payloads, args.seconds, args.senders, args.bound, args.writers, args.admission_wait
    )
    throughput = e2e["acked"] / e2e["elapsed"]
    print(
        f"{'store alone (Store.ingest_many)':<34}{e2e['store_only']:>12,.0f} spans/s   "
        f"{e2e['store_only'] / parse:.2f}x   (decoded requests, no receiver)"
    )
    print(
        f"{'end to end (gRPC -> embedded store)':<34}{throughput:>12,.0f} spans/s   "
        f"{throughput / parse:.2f}x   ({args.senders} exporters, {e2e['elapsed']:.0f} s)"
    )
    loss = e2e["acked"] - e2e["stored"]
    print(
        f"  acknowledged {e2e['acked']:,} spans, stored {e2e['stored']:,}: "
        f"{'zero loss' if loss == 0 else f'LOST {loss:,}'}"
    )
    print(
        f"  refused-and-retried exports {e2e['refused']:,}; peak spans in flight "
        f"{e2e['peak_inflight']:,} (bound {args.bound:,}); group writes {e2e['writes']:,} "
        f"(~{e2e['acked'] / max(1, e2e['writes']):,.0f} spans each); "
        f"receiver peak RSS {e2e['rss_mb']:.0f} MiB"
    )
    print(
        f"  CPU seconds over the run: receiver {e2e['receiver_cpu']:.1f}, embedded store "
        f"{e2e['store_cpu']:.1f}, senders {e2e['senders_cpu']:.1f} "
        f"(of {e2e['elapsed']:.0f} s wall on {os.cpu_count()} cores; "
        f"load average now {os.getloadavg()[0]:.1f})"
    )
    if loss:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
