"""Interop: the Node.js OpenTelemetry SDK's OTLP exporters (gRPC and HTTP/protobuf, from npm)
send to the receiver; the stored spans and attributes must be what they sent.

`make test` installs the npm packages (`make node-interop`, `npm ci` in tests/interop/node).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_receiver_http import span_counts, stored_spans

NODE_DIR = Path(__file__).parent / "node"
KINDS = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}  # Node's enum

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="needs node and `make node-interop` (npm ci in tests/interop/node)",
)


def run_node(protocol: str, endpoint: str, key: str, *, gzip: bool) -> dict:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {key}",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip" if gzip else "none",
    }
    done = subprocess.run(
        ["node", "send.js", protocol, endpoint, "3"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"node printed no result: {done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_node_exporter_spans_and_attributes_arrive(
    store, receiver, http_receiver, project, protocol, gzip
):
    endpoint = receiver.endpoint if protocol == "grpc" else http_receiver.url
    sent = run_node(protocol, endpoint, project.key, gzip=gzip)
    assert sent["code"] == 0, sent["error"]
    assert len(sent["spans"]) == 9
    assert span_counts(store) == (9, 3)  # only the 3 SERVER spans make performance records
    stored = stored_spans(store)
    for span in sent["spans"]:
        doc = stored[span["span_id"]]
        assert doc["name"] == span["name"]
        assert doc["kind"] == KINDS[span["kind"]]
        assert doc["parent_span_id"] == span["parent_span_id"]
        assert doc["attributes"] == span["attributes"]
    record = store.collection("performance_records").find_one({"request_info.path": "/orders/1"})
    assert record["endpoint"] == "POST /orders/:id"
    assert record["service"]["name"] == "node-checkout"
    assert record["version_info"]["app_version"] == "3.4.5"
    assert record["environment"]["telemetry_sdk"] == "nodejs"
    assert record["response_info"]["status_code"] == 201
    errors = [s for s in stored.values() if s["status_code"] == "error"]
    assert len(errors) == 3 and errors[0]["status_message"] == "template missing"


def test_node_exporter_with_a_wrong_key_fails_and_stores_nothing(
    store, receiver, http_receiver, project
):
    sent = run_node("http", http_receiver.url, project.key + "x", gzip=False)
    assert sent["code"] != 0
    assert span_counts(store) == (0, 0)
