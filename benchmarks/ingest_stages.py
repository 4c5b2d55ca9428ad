"""Where the ingest time goes: CPU per span of each stage, in the receiver and in the store.

The same payloads as receiver_throughput.py (500-span requests of realistic traces) go through
the stages `Store.ingest_many` runs, one stage at a time over the whole run, on a fresh
embedded store: decode (parse + normalize), building the `spans` and `performance_records`
documents, inserting each (pymongo's BSON encoding counts as receiver time), and the rollup
upserts, once per request-sized write (what a group write paid before pending_rollups.py) and
once for the whole run (what a busy receiver pays now). Receiver time is this thread's CPU
(`time.thread_time`); store time is the embedded server process's CPU (/proc, 10 ms ticks,
hence the repeated passes).

Bounded: about 30 s. Run from the repository root:
    PYTHONPATH=. .venv/bin/python benchmarks/ingest_stages.py [--passes 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.receiver_throughput import (
    ID_PREFIX,
    SPANS_PER_TRACE,
    TRACES_PER_REQUEST,
    _call_tree,
    _cpu_seconds,
    make_request,
)
from collector_receiver.otlp import decode_request
from collector_receiver.otlp_values import clear_value_cache, parse_fast_request
from storage_backend import Store
from storage_backend.embedded import EmbeddedServer
from storage_backend.records import build_performance_records, build_span_documents
from storage_backend.rollups import record_rollups
from storage_backend.schema import PERFORMANCE_RECORDS, SPANS

STAGES = (
    "decode (parse + normalize)",
    "build spans documents",
    "build performance records",
    "insert spans",
    "insert performance records",
    "rollups, one write per request",
    "rollups, one write per pass",
)


class _StageClock:
    """Adds the receiver's (this thread's) and the store's CPU time of a block to a stage."""

    def __init__(self, store_pid: int):
        self.store_pid = store_pid
        self.totals = {stage: [0.0, 0.0] for stage in STAGES}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        store_before, before = _cpu_seconds(self.store_pid), time.thread_time()
        yield
        receiver = time.thread_time() - before
        time.sleep(0.05)  # let the store finish its own bookkeeping of the call
        self.totals[name][0] += receiver
        self.totals[name][1] += _cpu_seconds(self.store_pid) - store_before


def measure(payloads: list[bytes], passes: int) -> tuple[dict[str, list[float]], int]:
    """{stage: [receiver CPU s, store CPU s]} summed over `passes`, and the span count."""
    spans = 0
    with tempfile.TemporaryDirectory() as tmp:
        embedded = EmbeddedServer(Path(tmp) / "mongo")
        embedded.start()
        store = Store.connect(embedded.url, "stages")
        store.ensure_schema()
        clock = _StageClock(embedded._proc.pid)  # a benchmark may look inside
        try:
            project, _ = store.projects.create("stages")
            keep = store.retention_policy.for_project(project)
            for n in range(passes):
                fresh = [p.replace(ID_PREFIX, n.to_bytes(len(ID_PREFIX), "big")) for p in payloads]
                spans += len(payloads) * TRACES_PER_REQUEST * SPANS_PER_TRACE
                now = datetime.now(timezone.utc)
                clear_value_cache()
                with clock.stage(STAGES[0]):
                    batches = [decode_request(parse_fast_request(p)).batch for p in fresh]
                with clock.stage(STAGES[1]):
                    docs = [
                        d
                        for b in batches
                        for d in build_span_documents(
                            project.id, b, retention=keep.spans, received_at=now
                        )
                    ]
                with clock.stage(STAGES[2]):
                    records = [
                        build_performance_records(
                            project.id, b, retention=keep.records, received_at=now
                        )
                        for b in batches
                    ]
                with clock.stage(STAGES[3]):
                    store.insert_new(SPANS, docs)
                with clock.stage(STAGES[4]):
                    store.insert_new(PERFORMANCE_RECORDS, [r for rs in records for r in rs])
                with clock.stage(STAGES[5]):
                    for request_records in records:
                        record_rollups(store.db, request_records)
                with clock.stage(STAGES[6]):
                    record_rollups(store.db, [r for rs in records for r in rs])
        finally:
            store.client.close()
            embedded.stop()
    return clock.totals, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=4, help="passes over the 8 requests")
    args = parser.parse_args()
    tree = _call_tree()
    payloads = [make_request(seed, tree).SerializeToString() for seed in range(8)]
    totals, spans = measure(payloads, args.passes)
    print(
        f"{spans:,} spans in {args.passes} passes of 8 requests; load average "
        f"{os.getloadavg()[0]:.1f}. CPU microseconds per span:"
    )
    print(f"{'stage':<34}{'receiver':>10}{'store':>10}")
    for name, (receiver, store) in totals.items():
        print(f"{name:<34}{receiver / spans * 1e6:>10.1f}{store / spans * 1e6:>10.1f}")
    path = [totals[s] for s in STAGES if s != STAGES[5]]
    receiver, store = (sum(cpu) / spans * 1e6 for cpu in zip(*path, strict=True))
    print(f"{'the ingest path (rollups per pass)':<34}{receiver:>10.1f}{store:>10.1f}")


if __name__ == "__main__":
    main()
