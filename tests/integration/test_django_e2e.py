"""Django with opentelemetry-instrumentation-django on a real WSGI server: settings-based
configuration (PERFORMANCE_MONITOR), SQL counted through Django's DB layer, the real OTLP
exporter to the real receiver and store."""

from __future__ import annotations

import importlib
import sys
import threading
import urllib.request

import pytest
from werkzeug.serving import make_server

from otel_pyinstrument_processor import decode_profile


@pytest.fixture
def django_shop(receiver, project, monkeypatch, tmp_path):
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    monkeypatch.setenv("DJANGO_DB_PATH", str(tmp_path / "shop.sqlite3"))
    monkeypatch.setenv("PYSTRUMENT_PROJECT_KEY", project.key)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("PYSTRUMENT_MAX_PROFILES_PER_SECOND", "0")
    # Trees for these few-ms requests: pyinstrument's hook (the sampling thread, the
    # default, gives trees to requests longer than its 10 ms interval).
    monkeypatch.setenv("PYSTRUMENT_PROFILER_MODE", "pyinstrument")
    sys.modules.pop("examples.django_app.wsgi", None)
    wsgi = importlib.import_module("examples.django_app.wsgi")
    server = make_server("127.0.0.1", 0, wsgi.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", wsgi.provider
    server.shutdown()
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().uninstrument()
    wsgi.provider.shutdown()
    sys.modules.pop("examples.django_app.wsgi", None)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        resp.read()


def test_django_requests_arrive_with_trees_and_sql_metrics(store, project, django_shop):
    base, provider = django_shop
    _get(base + "/api/orders/")
    _get(base + "/api/report/")
    _get(base + "/health/")
    assert provider.force_flush(30_000)
    records = {
        r["endpoint"]: r
        for r in store.collection("performance_records").find({"project_id": project.project.id})
    }
    assert set(records) == {"GET api/orders/", "GET api/report/", "GET health/"}, set(records)

    orders = records["GET api/orders/"]
    db = orders["performance_metrics"]["database_metrics"]
    assert db["query_count"] == 21  # 1 order query + 20 item queries (the N+1)
    assert 0 < db["query_time"] < orders["performance_metrics"]["total_duration"]
    assert orders["profile"] is not None

    report = records["GET api/report/"]
    tree = decode_profile(report["profile"]["tree"], report["profile"]["format"])
    stack, functions = [tree], set()
    while stack:
        node = stack.pop()
        functions.add(node.function)
        stack.extend(node.children)
    assert "rank_customers" in functions, sorted(functions)
    assert "database_metrics" not in report["performance_metrics"]  # no queries there

    assert records["GET health/"]["profile"] is None  # EXCLUDE_PATHS in PERFORMANCE_MONITOR


def test_bad_performance_monitor_setting_names_the_setting():
    from otel_pyinstrument_processor.config import ConfigError
    from otel_pyinstrument_processor.django import settings_config

    with pytest.raises(ConfigError, match=r"settings\.PERFORMANCE_MONITOR: sampling_rate"):
        settings_config({"SAMPLING_RATE": 30.0})
