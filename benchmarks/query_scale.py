"""How query times grow with the number of stored records (issue 5's targets).

Loads one project per size (default 10k, 100k and 1M records, each in its own database)
with realistic synthetic records (12 routes, log-normal latencies, three versions rolling
out over 7 days, a call tree on 20 % of them; built by ingest's own record builder, rollups
by ingest's own rollup function, see storage_backend/synthetic.py) and times at each size:
a requests-list page (newest first; one endpoint's slowest), trends 24h and 7d, the
endpoint summary and a version comparison. Prints the median of --repeat runs after a
warm-up run and the growth ratio largest/smallest size per query. Targets: trends and
endpoint summary <= 2x, a requests-list page <= 2x. Also prints how the requests page's
query is planned (explain) at each size.

    .venv/bin/python benchmarks/query_scale.py                       # 10k, 100k, 1M (~1 h
                                                                     # on a shared 2-core VM)
    .venv/bin/python benchmarks/query_scale.py --sizes 10k,100k      # quicker
    .venv/bin/python benchmarks/query_scale.py --data-dir /tmp/qs    # keep the loaded data:
                                                                     # a rerun skips loading
    PYSTRUMENT_MONGODB_URL=mongodb://... .venv/bin/python benchmarks/query_scale.py

Without PYSTRUMENT_MONGODB_URL an embedded server is started (in --data-dir, or a temporary
directory removed at the end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage_backend import Store
from storage_backend import queries as q
from storage_backend.embedded import EmbeddedServer
from storage_backend.request_queries import split_query
from storage_backend.schema import PERFORMANCE_RECORDS, ROLLUPS
from storage_backend.synthetic import VERSIONS, insert_synthetic

SPAN = timedelta(days=7)
META = "query_scale_meta"
"""A document per loaded database: the project and the end of its 7 days (for reuse)."""


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def label(size: int) -> str:
    return f"{size // 1_000_000}m" if size % 1_000_000 == 0 else f"{size // 1000}k"


def progress_bar(title: str, target: int) -> Callable[[int], None]:
    began = time.perf_counter()

    def report(done: int) -> None:
        rate = done / max(time.perf_counter() - began, 1e-9)
        left = (target - done) / rate if rate else 0
        bar = "#" * int(done / target * 30)
        sys.stderr.write(
            f"\r{title} [{bar:<30}] {done:>9,}/{target:,}  {rate:,.0f} rec/s  ~{left:.0f} s left "
        )
        sys.stderr.flush()
        if done >= target:
            sys.stderr.write("\n")

    return report


def load(store: Store, size: int, writers: int) -> tuple[str, datetime, bool]:
    """The (project id, end of data, loaded now) of `size` records in `store`, loading them
    unless a previous run did."""
    meta = store.db[META].find_one({"_id": "load", "size": size, "complete": True})
    if meta:
        print(f"{size:,} records: reusing {store.db.name}", file=sys.stderr)
        return meta["project_id"], meta["end"].replace(tzinfo=timezone.utc), False
    store.client.drop_database(store.db.name)
    store.ensure_schema()
    project, _key = store.projects.create("query-scale")
    end = datetime.now(timezone.utc).replace(microsecond=0)
    began = time.perf_counter()
    insert_synthetic(
        store,
        project.id,
        size,
        end=end,
        span=SPAN,
        writers=writers,
        progress=progress_bar(f"{label(size):>5}", size),
    )
    rollups = store.collection(ROLLUPS).count_documents({})
    print(
        f"{size:,} records loaded in {time.perf_counter() - began:.0f} s "
        f"({rollups:,} rollup documents)",
        file=sys.stderr,
    )
    store.db[META].insert_one(
        {"_id": "load", "size": size, "project_id": project.id, "end": end, "complete": True}
    )
    return project.id, end, True


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(first run, median of `repeat` more): the first warms the server's cache and packs
    the rollup histograms it reads, as a dashboard's first view does for later ones."""
    began = time.perf_counter()
    fn()
    first = time.perf_counter() - began
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return first, statistics.median(runs)


def newest_filter(end: datetime) -> q.RequestFilter:
    """Up to the whole minute after the data's end, as the UI asks whole minutes (so the
    page's total can come from the rollups)."""
    return q.RequestFilter(until=end.replace(second=0) + timedelta(minutes=1))


def queries(store: Store, project_id: str, end: datetime) -> dict[str, Callable[[], object]]:
    db = store.db
    newest = newest_filter(end)
    return {
        "requests page (newest)": lambda: q.list_requests(db, project_id, newest, size=20),
        "requests page (endpoint, slowest)": lambda: q.list_requests(
            db, project_id, q.RequestFilter(endpoint="GET /search"), sort="-duration", size=20
        ),
        "trends 24h": lambda: q.trends(db, project_id, "24h", until=end),
        "trends 7d": lambda: q.trends(db, project_id, "7d", until=end),
        "endpoint summary 24h": lambda: q.endpoint_summary(db, project_id, "24h", until=end),
        "endpoint summary 7d": lambda: q.endpoint_summary(db, project_id, "7d", until=end),
        "version comparison 7d": lambda: q.compare_versions(
            db, project_id, VERSIONS[0], VERSIONS[-1], "7d", until=end
        ),
    }


def page_plan(store: Store, project_id: str, end: datetime) -> str:
    """How the first window of the newest-first page is planned: the index and how many
    keys and documents the server examined."""
    flt = q.RequestFilter(until=end)
    server, _keep = split_query(project_id, flt, "timestamp")
    server["timestamp"] = {"$gte": end - timedelta(minutes=1), "$lt": end}
    plan: dict[str, Any] = (
        store.collection(PERFORMANCE_RECORDS)
        .find(server, {"_id": 1})
        .sort("timestamp", -1)
        .limit(20)
        .explain()
    )
    stats = plan.get("executionStats") or {}
    text = str(plan.get("queryPlanner", {}).get("winningPlan"))
    index = next((name for name in ("project_time", "project_version_time") if name in text), "?")
    scan = "IXSCAN" if "IXSCAN" in text else "COLLSCAN" if "COLLSCAN" in text else "?"
    page = q.list_requests(store.db, project_id, newest_filter(end), size=20)
    return (
        f"{scan} {index}: {stats.get('totalKeysExamined', '?')} keys, "
        f"{stats.get('totalDocsExamined', '?')} docs examined, "
        f"{stats.get('nReturned', '?')} returned; page total {page.total:,}"
        f"{' (lower bound)' if page.total_is_lower_bound else ' (exact)'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1m", help="comma-separated, e.g. 10k,100k")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query (median)")
    parser.add_argument("--writers", type=int, default=2, help="parallel insert connections")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the embedded store here; a later run reuses the sizes already loaded",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the loaded databases (implied by --data-dir)"
    )
    args = parser.parse_args()
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))

    tmp = None
    embedded = None
    url = os.environ.get("PYSTRUMENT_MONGODB_URL")
    if not url:
        if args.data_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="pystrument-bench-")
        data_dir = args.data_dir or Path(tmp.name)  # type: ignore[union-attr]
        data_dir.mkdir(parents=True, exist_ok=True)
        embedded = EmbeddedServer(data_dir)
        embedded.start()
        url = embedded.url
    results: dict[int, dict[str, tuple[float, float]]] = {}
    plans: dict[int, str] = {}
    try:
        for size in sizes:
            store = Store.connect(url, f"query_scale_{label(size)}")
            try:
                project_id, end, loaded = load(store, size, args.writers)
                results[size] = {
                    name: timed(fn, args.repeat)
                    for name, fn in queries(store, project_id, end).items()
                }
                plans[size] = page_plan(store, project_id, end)
            finally:
                if loaded and not (args.keep or args.data_dir):
                    store.client.drop_database(store.db.name)
                store.client.close()
    finally:
        if embedded:
            embedded.stop()
        if tmp:
            tmp.cleanup()

    first, last = sizes[0], sizes[-1]
    for title, which in ((f"median of {args.repeat}", 1), ("first run", 0)):
        header = f"{title:<36}" + "".join(f"{f'{s:,}':>12}" for s in sizes)
        print(header + f"{f'ratio {label(last)}/{label(first)}':>16}")
        for name in results[first]:
            times = [results[s][name][which] for s in sizes]
            row = f"{name:<36}" + "".join(f"{t * 1000:>10.1f}ms" for t in times)
            print(row + f"{times[-1] / times[0]:>15.2f}x")
        print()
    for size in sizes:
        print(f"requests page plan at {size:,}: {plans[size]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
