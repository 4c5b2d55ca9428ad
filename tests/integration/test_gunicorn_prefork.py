"""A real gunicorn with two pre-forked workers (``--preload``: configured in the master, before
the fork) serving the WSGI-wrapped example; every worker's profiles reach the receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from otel_pyinstrument_processor import decode_profile, iter_nodes
from storage_backend.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")


@pytest.mark.parametrize("mode", ["pyinstrument", "sampler"])
def test_preforked_gunicorn_workers_profile_and_export(store, project, receiver, mode):
    # sampler: each worker starts its own sampling thread on its first profiled request.
    port = free_port()
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "shop-gunicorn",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "PYSTRUMENT_PROJECT_KEY": project.key,
        "PYSTRUMENT_MAX_PROFILES_PER_SECOND": "0",
        "PYSTRUMENT_PROFILER_MODE": mode,
        "PYSTRUMENT_SAMPLER_INTERVAL": "0.005",
        "DEMO_UPSTREAM_DELAY": "0.05",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [str(GUNICORN), "--workers", "2", "--preload", "--bind", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "examples.flask_app.wsgi:application"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(base + "/", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not come up"
                time.sleep(0.2)
        for _ in range(6):
            urllib.request.urlopen(base + "/api/reports/sales", timeout=30).read()
        records: list[dict] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            records = list(
                store.collection("performance_records").find(
                    {"project_id": project.project.id, "endpoint": "GET /api/reports/sales"}
                )
            )
            if len(records) == 6:
                break
            time.sleep(0.3)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert len(records) == 6, output
    assert all(r["profile"] is not None for r in records), output
    assert {r["service"]["name"] for r in records} == {"shop-gunicorn"}
    expected_interval = 0.001 if mode == "pyinstrument" else 0.005
    assert {r["profile"]["interval"] for r in records} == {expected_interval}
    tree = decode_profile(records[0]["profile"]["tree"], records[0]["profile"]["format"])
    # The upstream call sleeps 50 ms; a sampler's tree ends at its last sample.
    assert tree.total_time > (0.05 if mode == "pyinstrument" else 0.04)
    if mode == "sampler":
        # The sleep is a C call the sampling thread cannot see: the thread's CPU clock
        # standing still marks those samples [wait], under the Python frame that slept.
        waits = [node for node, _ in iter_nodes(tree) if node.function == "[wait]"]
        assert waits and sum(node.total_time for node in waits) >= 0.02, output
