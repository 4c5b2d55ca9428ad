"""How query times grow with the number of stored records (issue 5's targets).

Grows one project to each size in turn (default 10k then 100k; add 1m with --sizes), with
realistic synthetic records (12 routes, log-normal latencies, three versions over 7 days,
a call tree on 20 % of them) written with insert_many plus their rollups, and times at each
size: a requests-list page (newest first; and one endpoint's slowest), trends 24h and 7d,
the endpoint summary and a version comparison. Prints the median of --repeat runs and the
growth ratio largest/smallest size per query. Targets: trends and endpoint summary <= 2x,
a requests-list page <= 2x.

    .venv/bin/python benchmarks/query_scale.py                      # 10k, 100k (~5 min)
    .venv/bin/python benchmarks/query_scale.py --sizes 10k,100k,1m  # + 1M (~40 min here)
    PYSTRUMENT_MONGODB_URL=mongodb://... .venv/bin/python benchmarks/query_scale.py

Without PYSTRUMENT_MONGODB_URL an embedded server is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage_backend import Store
from storage_backend import queries as q
from storage_backend.embedded import EmbeddedServer
from storage_backend.schema import ROLLUPS
from storage_backend.synthetic import VERSIONS, insert_synthetic

SPAN = timedelta(days=7)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def progress_bar(label: str, start: int, target: int) -> Callable[[int], None]:
    began = time.perf_counter()

    def report(done: int) -> None:
        total = start + done
        share = total / target
        rate = done / max(time.perf_counter() - began, 1e-9)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r{label} [{bar:<30}] {total:>9,}/{target:,}  {rate:,.0f} rec/s ")
        sys.stderr.flush()
        if total >= target:
            sys.stderr.write("\n")

    return report


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm the server's cache the way a dashboard's second view would
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)


def queries(store: Store, project_id: str, end: datetime) -> dict[str, Callable[[], object]]:
    db = store.db
    return {
        "requests page (newest)": lambda: q.list_requests(db, project_id, size=20),
        "requests page (endpoint, slowest)": lambda: q.list_requests(
            db, project_id, q.RequestFilter(endpoint="GET /search"), sort="-duration", size=20
        ),
        "trends 24h": lambda: q.trends(db, project_id, "24h", until=end),
        "trends 7d": lambda: q.trends(db, project_id, "7d", until=end),
        "endpoint summary 24h": lambda: q.endpoint_summary(db, project_id, "24h", until=end),
        "version comparison 7d": lambda: q.compare_versions(
            db, project_id, VERSIONS[0], VERSIONS[-1], "7d", until=end
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k", help="comma-separated, e.g. 10k,100k,1m")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query (median)")
    args = parser.parse_args()
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))

    tmp = None
    embedded = None
    url = os.environ.get("PYSTRUMENT_MONGODB_URL")
    if not url:
        tmp = tempfile.TemporaryDirectory(prefix="pystrument-bench-")
        embedded = EmbeddedServer(Path(tmp.name))
        embedded.start()
        url = embedded.url
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    store = Store.connect(url, db_name)
    results: dict[int, dict[str, float]] = {}
    try:
        store.ensure_schema()
        project, _key = store.projects.create("query-scale")
        end = datetime.now(timezone.utc)
        stored = 0
        for chunk, size in enumerate(sizes):
            began = time.perf_counter()
            # Each chunk spreads over the same 7 days: the data gets denser, as it does when
            # traffic grows, rather than longer.
            insert_synthetic(
                store,
                project.id,
                size - stored,
                seed=chunk + 1,
                end=end,
                span=SPAN,
                progress=progress_bar(f"{size:>9,}", stored, size),
            )
            load = time.perf_counter() - began
            stored = size
            rollups = store.collection(ROLLUPS).count_documents({})
            print(
                f"{size:,} records stored ({load:.0f} s for this step, "
                f"{rollups:,} rollup documents)",
                file=sys.stderr,
            )
            results[size] = {
                name: timed(fn, args.repeat) for name, fn in queries(store, project.id, end).items()
            }
    finally:
        store.client.drop_database(db_name)
        store.close()
        if embedded:
            embedded.stop()
        if tmp:
            tmp.cleanup()

    first, last = sizes[0], sizes[-1]
    header = f"{'query':<36}" + "".join(f"{f'{s:,}':>12}" for s in sizes)
    header += f"{f'ratio {last // 1000}k/{first // 1000}k':>18}"
    print(header)
    for name in results[first]:
        row = f"{name:<36}" + "".join(f"{results[s][name] * 1000:>10.1f}ms" for s in sizes)
        row += f"{results[last][name] / results[first][name]:>17.2f}x"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
