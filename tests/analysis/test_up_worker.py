"""`pystrument up` runs an analysis worker in-process: a report requested over the REST API
is generated and downloadable, and SIGTERM still stops everything cleanly."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.integration.test_cli import Up


def _call(url: str, key: str, body: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


def test_up_runs_a_worker_that_generates_reports(tmp_path: Path):
    up = Up(tmp_path / "data")
    try:
        assert any("Analysis worker    : 1 job(s) at a time" in line for line in up.lines)
        api = up.http + "/api/v1/analysis"
        _, body = _call(api + "/report", up.key, {})
        task_id = json.loads(body)["data"]["task_id"]
        deadline = time.monotonic() + 60
        state = "pending"
        while time.monotonic() < deadline and state in ("pending", "running"):
            time.sleep(0.2)
            state = json.loads(_call(f"{api}/task-status/{task_id}", up.key)[1])["data"]["state"]
        assert state == "completed"
        status, report = _call(f"{api}/report/{task_id}?format=markdown", up.key)
        assert status == 200
        assert report.decode().startswith("# Performance report: prj_")
    finally:
        code = up.stop()
    assert code == 0
