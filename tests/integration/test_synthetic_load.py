"""The bulk loader of synthetic records writes what ingest would (`storage_backend.synthetic`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storage_backend.rollups import histogram_of, record_rollups
from storage_backend.schema import PERFORMANCE_RECORDS, ROLLUPS
from storage_backend.synthetic import insert_synthetic

END = datetime.now(timezone.utc).replace(microsecond=0)


def _rollups(store, project_id: str) -> dict:
    docs = store.collection(ROLLUPS).find({"project_id": project_id}, {"_id": 0, "project_id": 0})
    out = {}
    for d in docs:
        d["duration_sum"] = round(d["duration_sum"], 9)  # summed in another order
        # The histogram is the same counts, in as many packed deltas as there were writes.
        d["histogram"] = histogram_of(d).counts
        for field in ("hist", "hpack", "hdelta", "hdelta_n"):
            d.pop(field, None)
        out[(d["level"], d["bucket"], d["endpoint"], d["version"])] = d
    return out


def test_bulk_loaded_rollups_equal_the_ingest_path_even_when_loaded_twice(store):
    loaded, _ = store.projects.create("loaded")
    ingested, _ = store.projects.create("ingested")
    options = {"end": END, "span": timedelta(hours=30), "batch_size": 70, "writers": 2}
    assert insert_synthetic(store, loaded.id, 300, seed=1, **options) == 300
    # A second load into the same project meets existing rollup documents: upserted.
    assert insert_synthetic(store, loaded.id, 200, seed=2, **options) == 200

    records = list(store.collection(PERFORMANCE_RECORDS).find({"project_id": loaded.id}))
    assert len(records) == 500
    assert all(r["endpoint"] == f"{r['request_info']['method']} {r['request_info']['route']}"
               for r in records)  # fmt: skip
    for r in records:
        r["project_id"] = ingested.id
    record_rollups(store.db, records[:250])
    record_rollups(store.db, records[250:])
    assert _rollups(store, loaded.id) == _rollups(store, ingested.id)
