"""`opentelemetry-instrument python app.py` in a real subprocess: the app has no tracing code;
OpenTelemetry's auto-instrumentation loads pystrument's configurator entry point, which adds
the processor; the profile arrives at the real receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from otel_pyinstrument_processor import decode_profile
from storage_backend.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"app exited: {process.stdout.read()}")  # type: ignore[union-attr]
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def test_opentelemetry_instrument_picks_up_the_processor(store, project, receiver):
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "OTEL_SERVICE_NAME": "shop-zero-code",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "PYSTRUMENT_PROJECT_KEY": project.key,
        "PYSTRUMENT_EXCLUDED_PATHS": "/api/users",
        "PYSTRUMENT_SLOW_THRESHOLD": "0.05",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "django,fastapi,asgi",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [str(INSTRUMENT), sys.executable, str(ROOT / "examples/zero_code/app.py")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base + "/", process)
        urllib.request.urlopen(base + "/api/reports/sales", timeout=30).read()
        urllib.request.urlopen(base + "/api/users", timeout=30).read()
        deadline = time.monotonic() + 30
        records: dict[str, dict] = {}
        while time.monotonic() < deadline and len(records) < 3:
            time.sleep(0.3)
            records = {
                r["endpoint"]: r
                for r in store.collection("performance_records").find(
                    {"project_id": project.project.id}
                )
            }
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert set(records) == {"GET /", "GET /api/reports/sales", "GET /api/users"}, output
    slow = records["GET /api/reports/sales"]
    assert slow["service"]["name"] == "shop-zero-code"
    tree = decode_profile(slow["profile"]["tree"], slow["profile"]["format"])
    stack = [tree]
    functions = set()
    while stack:
        node = stack.pop()
        functions.add(node.function)
        stack.extend(node.children)
    assert "compute_sales_statistics" in functions
    assert slow["performance_metrics"]["cpu_time"] > 0
    assert records["GET /api/users"]["profile"] is None  # excluded by PYSTRUMENT_EXCLUDED_PATHS
    assert records["GET /"]["profile"] is None  # fast: dropped by the slow threshold
    assert "cpu_time" in records["GET /"]["performance_metrics"]
