"""Measure the analysis job queue: jobs/s claimed and completed by 1 and 2 workers.

Two workloads on the embedded store (SecantusDB, a separate process, as in production):
- `noop`: the handler does nothing, so the figure is the queue's own cost per job
  (claim with find-and-modify + complete = 2 round trips);
- `builtin`: real `analyze` jobs running the builtin analyzer on stored requests with a
  call tree and 12 DB spans each (load record + spans, decode tree, rules, store analysis).

Each worker is a separate process (as `pystrument analyzer` would be) with one claim slot.
The 1-worker and 2-worker runs are interleaved, best of ROUNDS, printed as jobs/s and the
2/1 ratio. Bounded: ~1 minute on the 2-core VM.

Run from the repository root:
    PYTHONPATH=. .venv/bin/python benchmarks/analysis_queue.py [--jobs 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import tempfile
import time
from pathlib import Path

from analysis_service import AnalysisSettings, Worker
from otel_pyinstrument_processor import CallTreeNode, encode_profile
from otel_pyinstrument_processor import attributes as profile_attrs
from storage_backend import ResourceSpans, SpanData, Store
from storage_backend.embedded import EmbeddedServer

STATEMENT = "SELECT * FROM items WHERE id = ?"


def _noop(ctx, job):
    return None


def _work(url: str, db: str, kind: str, start_at: float, out: mp.Queue) -> None:
    store = Store.connect(url, db)
    handlers = {"analyze": _noop} if kind == "noop" else None
    worker = Worker(store, AnalysisSettings(), handlers=handlers, schedule=False)
    while time.time() < start_at:  # start together
        time.sleep(0.001)
    n = worker.run_until_idle()
    out.put((n, time.time()))
    store.client.close()


def _records(store: Store, project, count: int) -> list[str]:
    ids = []
    app = "/srv/app.py"
    for i in range(count):
        trace, span = secrets.token_hex(16), secrets.token_hex(8)
        t0 = time.time_ns()
        crunch = CallTreeNode("crunch", app, 20, 0.5, 0.5, 50)
        load = CallTreeNode(
            "load_items",
            app,
            30,
            0.3,
            0.01,
            30,
            [CallTreeNode("Cursor.fetchall", "<built-in>", 0, 0.29, 0.29, 29)],
        )
        tree = CallTreeNode("handler", app, 10, 0.85, 0.05, 85, [crunch, load])  # fmt: skip
        enc = encode_profile(tree)
        spans = [SpanData(trace, span, None, "GET /r", "server", t0, t0 + 850_000_000,
                          {"http.route": f"/r{i % 10}", "http.request.method": "GET",
                           profile_attrs.PROFILE_TREE: enc.tree,
                           profile_attrs.PROFILE_FORMAT: enc.format})]  # fmt: skip
        for q in range(12):
            spans.append(SpanData(trace, secrets.token_hex(8), span, "SELECT", "client",
                                  t0 + q, t0 + q + 20_000_000,
                                  {"db.system": "sqlite",
                                   "db.statement": STATEMENT}))  # fmt: skip
        store.ingest(project, [ResourceSpans({"service.name": "bench"}, spans)])
        ids.append(trace + span)
    return ids


def run(url: str, store: Store, record_ids: list[str], kind: str, workers: int, jobs: int) -> float:
    store.collection("analysis_jobs").delete_many({})
    store.collection("ai_analysis_results").delete_many({})
    for i in range(jobs):
        store.jobs.enqueue("analyze", {"record_id": record_ids[i % len(record_ids)]})
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0
    procs = [mp.Process(target=_work, args=(url, store.db.name, kind, start_at, out))
             for _ in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    done = sum(n for n, _ in results)
    assert done == jobs, (done, jobs)
    assert store.jobs.stats()["by_state"]["completed"] == jobs
    return jobs / (max(t for _, t in results) - start_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp))
        server.start()
        try:
            store = Store.connect(server.url, "bench_queue")
            store.ensure_schema()
            project, _ = store.projects.create("bench")
            record_ids = _records(store, project, 50)
            best: dict[tuple[str, int], float] = {}
            for _ in range(args.rounds):
                for kind in ("noop", "builtin"):
                    for workers in (1, 2):
                        rate = run(server.url, store, record_ids, kind, workers, args.jobs)
                        key = (kind, workers)
                        best[key] = max(best.get(key, 0.0), rate)
            print(f"{args.jobs} jobs per run, best of {args.rounds}")
            print(f"{'workload':<10}{'1 worker':>12}{'2 workers':>12}{'2/1':>8}")
            for kind in ("noop", "builtin"):
                one, two = best[(kind, 1)], best[(kind, 2)]
                print(f"{kind:<10}{one:>10.0f}/s{two:>10.0f}/s{two / one:>8.2f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
