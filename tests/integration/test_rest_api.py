"""The REST API of the brief over the real store: envelope, error codes, access control."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from collector_receiver.http_app import create_app
from storage_backend import Store
from storage_backend.embedded import free_port
from tests.integration.test_queries import _batch

ADMIN = "test-admin-token-0123456789"


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def key_header(key: str) -> dict[str, str]:
    return {"X-Pystrument-Project-Key": key}


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(store, admin_token=ADMIN)) as c:
        yield c


def _record(duration: float = 0.25, status: int = 200, **extra) -> dict:
    return {
        "trace_id": "abc123",
        "request_info": {
            "method": "GET",
            "path": "/users/7",
            "route": "/users/<id>",
            "query_params": {"a.b": ["1"], "$x": ["2"]},
        },
        "response_info": {"status_code": status},
        "performance_metrics": {"total_duration": duration, "cpu_time": 0.1},
        "function_calls": [
            {"call_id": "0", "function_name": "view", "duration": duration, "depth": 0},
        ],
        "version_info": {"app_version": "1.4.2"},
        "timestamp": datetime.now(timezone.utc).isoformat(),
        **extra,
    }


def _create(client: TestClient, name: str) -> tuple[str, str]:
    res = client.post(
        "/api/v1/projects", json={"name": name, "framework": "flask"}, headers=admin()
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["code"] == 0 and body["msg"] == "success"
    return body["data"]["id"], body["data"]["project_key"]


def test_projects_crud_as_admin(client: TestClient):
    pid, key = _create(client, "shop")
    assert key.startswith("psk_")
    listing = client.get("/api/v1/projects?page=1&size=20", headers=admin()).json()
    assert listing["code"] == 0 and listing["data"]["total"] == 1
    assert listing["data"]["items"][0]["id"] == pid
    assert key not in str(listing)  # the key is shown at creation only

    res = client.put(
        f"/api/v1/projects/{pid}",
        headers=admin(),
        json={"description": "new", "sampling_rate": 0.5, "retention_days": 7},
    )
    data = res.json()["data"]
    assert data["description"] == "new" and data["config"]["sampling_rate"] == 0.5
    assert data["config"]["retention_days"] == 7 and data["name"] == "shop"

    rotated = client.post(f"/api/v1/projects/{pid}/rotate-key", headers=admin()).json()
    new_key = rotated["data"]["project_key"]
    assert new_key != key
    assert client.get(f"/api/v1/projects/{pid}", headers=key_header(key)).json()["code"] == 20003
    assert client.get(f"/api/v1/projects/{pid}", headers=key_header(new_key)).json()["code"] == 0

    assert client.delete(f"/api/v1/projects/{pid}", headers=admin()).json()["code"] == 0
    gone = client.get(f"/api/v1/projects/{pid}", headers=admin())
    assert gone.status_code == 404 and gone.json()["code"] == 20001


def test_every_error_code_of_the_brief_is_reachable(client: TestClient, store: Store):
    pid, key = _create(client, "one")
    cases = [
        (client.get("/api/v1/projects?page=0", headers=admin()), 400, 10001),
        (
            client.get("/api/v1/performance/trends/" + pid + "?time_range=2h", headers=admin()),
            400,
            10001,
        ),
        (client.get("/api/v1/projects"), 401, 10002),
        (client.post("/api/v1/projects", json={"name": "x"}, headers=key_header(key)), 403, 10003),
        (client.get("/api/v1/projects/prj_nothere", headers=admin()), 404, 20001),
        (client.post("/api/v1/projects", json={"name": "one"}, headers=admin()), 409, 20002),
        (client.get("/api/v1/projects", headers=key_header("psk_wrong")), 401, 20003),
        (
            client.post(
                "/api/v1/performance/collect", json={"request_info": {}}, headers=key_header(key)
            ),
            400,
            20004,
        ),
        (
            client.post(
                "/api/v1/performance/collect",
                content=b"{not json",
                headers={**key_header(key), "content-type": "application/json"},
            ),
            400,
            20004,
        ),
        (
            client.post(
                "/api/v1/performance/collect", json=_record(duration=-1), headers=key_header(key)
            ),
            400,
            20004,
        ),
    ]
    for response, status, code in cases:
        body = response.json()
        assert (response.status_code, body["code"]) == (status, code), body
        assert set(body) == {"code", "msg", "data"} and body["msg"]


def test_store_down_answers_10005(embedded_server):
    down = Store.connect(f"mongodb://127.0.0.1:{free_port()}", "x", server_selection_timeout_ms=300)
    try:
        with TestClient(create_app(down, admin_token=ADMIN)) as c:
            res = c.get("/api/v1/projects", headers=admin())
        assert res.status_code == 503 and res.json()["code"] == 10005
    finally:
        down.client.close()


def test_collect_then_query_every_read_endpoint(client: TestClient):
    pid, key = _create(client, "collect")
    h = key_header(key)
    first = _record()
    res = client.post("/api/v1/performance/collect", json=first, headers=h).json()
    assert res == {"code": 0, "msg": "success", "data": {"received": 1, "stored": 1}}
    batch = [_record(duration=0.5, status=503, trace_id="t2"), _record(duration=1.0, trace_id="t3")]
    assert client.post("/api/v1/performance/collect", json=batch, headers=h).json()["data"] == {
        "received": 2,
        "stored": 2,
    }
    again = client.post("/api/v1/performance/collect", json=first, headers=h).json()
    assert again["data"]["stored"] == 0  # a resent record is stored once

    page = client.get("/api/v1/performance/records?page=1&size=20&sort=-duration", headers=h)
    items = page.json()["data"]["items"]
    assert [i["duration"] for i in items] == [1.0, 0.5, 0.25]
    assert items[0]["endpoint"] == "GET /users/<id>" and items[0]["version"] == "1.4.2"
    errors = client.get("/api/v1/performance/records?status_class=5xx", headers=h).json()
    assert [i["status_code"] for i in errors["data"]["items"]] == [503]

    detail = client.get(f"/api/v1/performance/records/{items[2]['id']}", headers=h).json()
    assert detail["code"] == 0
    assert detail["data"]["function_calls"][0]["function_name"] == "view"
    assert detail["data"]["record"]["request_info"]["query_params"] == {"a_b": ["1"], "x": ["2"]}

    trends = client.get(f"/api/v1/performance/trends/{pid}?time_range=1h", headers=h).json()
    assert trends["data"]["overall"]["count"] == 3 and trends["data"]["overall"]["errors"] == 1
    assert len(trends["data"]["points"]) == 60
    summary = client.get(f"/api/v1/performance/endpoints/{pid}?time_range=24h", headers=h).json()
    assert summary["data"]["endpoints"][0]["endpoint"] == "GET /users/<id>"
    versions = client.get(f"/api/v1/performance/versions/{pid}", headers=h).json()
    assert versions["data"][0]["version"] == "1.4.2" and versions["data"][0]["count"] == 3
    cmp = client.get(
        f"/api/v1/performance/versions/{pid}/compare?base=1.4.2&target=1.5.0", headers=h
    ).json()
    assert cmp["data"]["endpoints"][0]["target"] is None
    tree = client.get(
        f"/api/v1/performance/calltree/{pid}?endpoint=GET%20/users/<id>", headers=h
    ).json()
    assert tree["code"] == 0 and tree["data"]["profiles"] == 0  # pushed records carry no tree

    as_admin = client.get(f"/api/v1/performance/records?project_id={pid}", headers=admin())
    assert as_admin.json()["data"]["total"] == 3
    no_project = client.get("/api/v1/performance/records", headers=admin()).json()
    assert no_project["code"] == 10001


def test_a_project_key_reads_only_its_own_project_and_never_sees_keys(client: TestClient):
    pid_a, key_a = _create(client, "a")
    pid_b, key_b = _create(client, "b")
    client.post("/api/v1/performance/collect", json=_record(), headers=key_header(key_b))
    record_b = client.get("/api/v1/performance/records", headers=key_header(key_b)).json()
    record_id = record_b["data"]["items"][0]["id"]
    a = {"Authorization": f"Bearer {key_a}"}
    forbidden = [
        f"/api/v1/projects/{pid_b}",
        f"/api/v1/performance/records?project_id={pid_b}",
        f"/api/v1/performance/trends/{pid_b}",
        f"/api/v1/performance/endpoints/{pid_b}",
        f"/api/v1/performance/versions/{pid_b}",
        f"/api/v1/performance/versions/{pid_b}/compare?base=1&target=2",
        f"/api/v1/performance/calltree/{pid_b}?endpoint=x",
    ]
    for path in forbidden:
        res = client.get(path, headers=a)
        assert (res.status_code, res.json()["code"]) == (403, 10003), path
    # Another project's record is simply not found for this key.
    assert client.get(f"/api/v1/performance/records/{record_id}", headers=a).json()["code"] != 0
    # A key cannot push into another project, nor manage projects.
    res = client.post(f"/api/v1/performance/collect?project_id={pid_b}", json=_record(), headers=a)
    assert res.json()["code"] == 10003
    for method, path in [
        ("put", f"/api/v1/projects/{pid_a}"),
        ("delete", f"/api/v1/projects/{pid_a}"),
        ("post", f"/api/v1/projects/{pid_a}/rotate-key"),
    ]:
        res = client.request(method, path, headers=a, json={})
        assert res.json()["code"] == 10003, path

    seen = []
    for path in ["/api/v1/projects", f"/api/v1/projects/{pid_a}", "/api/v1/performance/records"]:
        res = client.get(path, headers=a)
        assert res.json()["code"] == 0
        seen.append(res.text)
    listing = client.get("/api/v1/projects", headers=a).json()["data"]
    assert [p["id"] for p in listing["items"]] == [pid_a]
    for text in seen:
        assert key_a not in text and key_b not in text and pid_b not in text


def test_an_unexpected_failure_answers_10000_in_the_envelope(store: Store):
    app = create_app(store, admin_token=ADMIN)

    def explode() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as c:
        res = c.get("/api/v1/explode")
    assert res.status_code == 500
    assert res.json() == {"code": 10000, "msg": "internal error", "data": None}


def test_naive_times_in_filters_are_taken_as_utc(client: TestClient):
    _pid, key = _create(client, "naive")
    client.post("/api/v1/performance/collect", json=_record(), headers=key_header(key))
    res = client.get(
        "/api/v1/performance/records?since=2000-01-01T00:00:00&until=2100-01-01T00:00:00",
        headers=key_header(key),
    ).json()
    assert res["code"] == 0 and res["data"]["total"] == 1


def test_collect_stores_any_valid_json_keys_and_strings(client: TestClient, store: Store):
    _pid, key = _create(client, "odd")
    record = _record()
    record["request_info"]["query_params"] = {
        "a": {"b\u0000c": 1, "$d": {"e.f": "x"}},
        "s": ["lone \udc80 surrogate"],
        "n": 2**70,
    }
    body = json.dumps(record).encode()  # json keeps the lone surrogate as \\udc80
    res = client.post(
        "/api/v1/performance/collect",
        content=body,
        headers={**key_header(key), "content-type": "application/json"},
    )
    assert res.json()["data"] == {"received": 1, "stored": 1}, res.text
    doc = store.collection("performance_records").find_one({"source": "collect"})
    assert doc["request_info"]["query_params"] == {
        "a": {"bc": 1, "d": {"e_f": "x"}},
        "s": ["lone \\udc80 surrogate"],
        "n": str(2**70),
    }


def test_a_request_is_found_by_its_trace_id(client: TestClient, store: Store):
    pid, key = _create(client, "traced")
    _, other_key = _create(client, "other")
    now_ns = int(datetime.now(timezone.utc).timestamp() * 1e9)
    store.ingest(store.projects.get(pid), _batch(0xBEEF, tree=None, start_ns=now_ns))
    trace = f"{0xBEEF:032x}"
    url = f"/api/v1/performance/traces/{trace.upper()}"
    found = client.get(url, headers=key_header(key)).json()
    assert found["code"] == 0 and found["data"]["trace_id"] == trace
    (item,) = found["data"]["items"]
    assert item["trace_id"] == trace and item["endpoint"] == "GET /items/{id}"
    detail = client.get(f"/api/v1/performance/records/{item['id']}", headers=key_header(key))
    assert detail.json()["data"]["summary"]["trace_id"] == trace
    # Another project's key sees nothing of it; a malformed id is a parameter error.
    assert client.get(url, headers=key_header(other_key)).json()["data"]["items"] == []
    assert client.get(f"{url}?project_id={pid}", headers=key_header(other_key)).status_code == 403
    assert client.get(url, headers=admin()).json()["code"] == 10001  # admin: name the project
    assert client.get(f"{url}?project_id={pid}", headers=admin()).json()["data"]["items"]
    bad = client.get("/api/v1/performance/traces/not-a-trace", headers=key_header(key)).json()
    assert bad["code"] == 10001 and "trace id" in bad["msg"]
