"""`pystrument up` serving OTLP/HTTP and /metrics, with JSON logs, as a user runs it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.integration.test_cli import Up
from tests.otlp_helpers import make_spans


def test_up_serves_otlp_http_and_metrics_with_json_logs(tmp_path: Path):
    up = Up(tmp_path / "data", {"PYSTRUMENT_LOG_FORMAT": "json"})
    try:
        http = up.http.replace("localhost", "127.0.0.1")
        exporter = OTLPSpanExporter(
            endpoint=f"{http}/v1/traces", headers={"authorization": f"Bearer {up.key}"}
        )
        assert exporter.export(make_spans(n_traces=2)) is SpanExportResult.SUCCESS
        bad = urllib.request.Request(
            f"{http}/v1/traces",
            data=b"garbage",
            headers={"content-type": "application/x-protobuf", "authorization": "Bearer x"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=10)
        assert err.value.code == 400
        with urllib.request.urlopen(f"{http}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'pystrument_receiver_accepted_spans_total{transport="http"} 6' in metrics
    finally:
        assert up.stop() == 0
    stderr = up.proc.stderr.read() if up.proc.stderr else ""
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records, stderr
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("OTLP/HTTP export refused (400)" in r["message"] for r in records)
    assert up.key not in stderr
