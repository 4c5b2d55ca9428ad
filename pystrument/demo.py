"""`pystrument demo`: run the example Flask app against a running `pystrument up`.

It starts examples/flask_app in this process (a real WSGI server on a free port), with
OpenTelemetry's Flask instrumentation and pystrument's processor exporting over OTLP/gRPC,
sends traffic through it, flushes, and reports what reached the store.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

from pystrument.server import KEY_FILE, read_runtime_info
from storage_backend.embedded import default_data_dir

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flask_app" / "app.py"
ROUTES = [
    ("/api/users", 6),
    ("/api/users/7", 6),
    ("/api/users/9999", 1),
    ("/api/orders", 3),
    ("/api/reports/sales", 3),
    ("/api/fail", 1),
]


def _load_example() -> ModuleType:
    if not EXAMPLE.exists():
        raise SystemExit(
            f"pystrument demo: the example app is not here ({EXAMPLE}); "
            "run the demo from a source checkout"
        )
    spec = importlib.util.spec_from_file_location("pystrument_demo_shop", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def run_demo(*, endpoint: str | None, key: str | None, requests: int, data_dir: str | None) -> int:
    """Drive `requests` requests through the instrumented example app; 0 on success."""
    from werkzeug.serving import make_server

    ddir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    runtime = read_runtime_info(ddir)
    endpoint = (
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or runtime.get("grpc_endpoint", "http://localhost:4317")
    )
    key = key or os.environ.get("PYSTRUMENT_PROJECT_KEY")
    if not key and (ddir / KEY_FILE).exists():
        key = (ddir / KEY_FILE).read_text().strip()
    if not key:
        print(
            "pystrument demo: no project key. Start `pystrument up` first (it keeps the "
            "default project's key), or pass --key / PYSTRUMENT_PROJECT_KEY.",
            file=sys.stderr,
        )
        return 2
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    os.environ["PYSTRUMENT_PROJECT_KEY"] = key
    os.environ.setdefault("OTEL_SERVICE_NAME", "shop-flask")
    os.environ.setdefault("OTEL_RESOURCE_ATTRIBUTES", "service.version=1.0.0")
    # A demo shows a call tree for every request: pyinstrument's per-call hook (1 ms
    # detail, C functions as nodes) on every request, uncapped. The production default,
    # the sampling thread at 100 Hz, gives trees to requests longer than its 10 ms
    # interval; the demo's requests take 1-20 ms.
    os.environ.setdefault("PYSTRUMENT_PROFILER_MODE", "pyinstrument")
    os.environ.setdefault("PYSTRUMENT_MAX_PROFILES_PER_SECOND", "0")

    example = _load_example()
    app, provider = example.instrumented_app()
    # The demo's own request log and the deliberate /api/fail traceback are noise here.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.logger.disabled = True
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="demo-app", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    print(f"Example shop app on {base}, exporting to {endpoint}")

    plan = [path for path, weight in ROUTES for _ in range(weight)]
    started = time.monotonic()
    statuses: dict[int, int] = {}
    for i in range(requests):
        path = plan[i % len(plan)]
        status = _get(base + path)
        statuses[status] = statuses.get(status, 0) + 1
        print(f"\r  {i + 1}/{requests} requests sent", end="", flush=True)
    print(f"\n  statuses: {dict(sorted(statuses.items()))} in {time.monotonic() - started:.1f}s")

    flushed = provider.force_flush(30_000)
    server.shutdown()
    provider.shutdown()
    if not flushed:
        print("pystrument demo: the exporter did not flush in time; is `pystrument up` running?")
        return 1
    mongodb_url = os.environ.get("PYSTRUMENT_MONGODB_URL") or runtime.get("mongodb_url")
    if mongodb_url:
        _report(mongodb_url, runtime.get("database", "pystrument"), key)
    print(
        f"Done. See the requests and their call trees in the UI: {ui_url}"
        if (ui_url := runtime.get("ui_url"))
        else "Done. See them in the UI: `pystrument ui` (http://127.0.0.1:8501)."
    )
    return 0


def _report(mongodb_url: str, database: str, key: str) -> None:
    from storage_backend import Store, StoreError

    try:
        with Store.connect(mongodb_url, database) as store:
            project = store.projects.find_by_key(key)
            if project is None:
                print("  (the key does not belong to a project in this store)")
                return
            records = store.collection("performance_records")
            total = records.count_documents({"project_id": project.id})
            profiled = records.count_documents({"project_id": project.id, "profile": {"$ne": None}})
            print(
                f"  project {project.name!r}: {total} performance records stored, "
                f"{profiled} with call trees"
            )
    except StoreError as exc:
        print(f"  (could not read the store: {exc})")
