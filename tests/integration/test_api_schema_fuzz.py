"""Schemathesis over the OpenAPI spec: no 5xx anywhere, every /api response in the envelope.

Generated requests carry the admin token (to reach past authentication) or a project key,
against a store seeded with a project and records, so the handlers' real paths run.
"""

from __future__ import annotations

import json

import hypothesis
import hypothesis.strategies as st
import schemathesis

from collector_receiver.http_app import create_app
from storage_backend import Store
from storage_backend.synthetic import insert_synthetic

ADMIN = "fuzz-admin-token"
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)


def _assert_enveloped(response) -> int:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    body = json.loads(response.text)
    assert isinstance(body, dict) and set(body) == {"code", "msg", "data"}, body
    assert isinstance(body["code"], int) and isinstance(body["msg"], str)
    assert (body["code"] == 0) == (response.status_code == 200), body
    return body["code"]


# schemathesis' lazy pytest fixtures do not run under pytest 9 ('Function' object has no
# attribute '_nodeid'), so the operations are driven with Hypothesis directly.
def test_no_5xx_and_every_response_enveloped(store: Store):
    project, key = store.projects.create("fuzzed")
    insert_synthetic(store, project.id, 300, profile_share=0.5)
    app = create_app(store, admin_token=ADMIN)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex="^/api/")
    callers = [{"Authorization": f"Bearer {ADMIN}"}, {"X-Pystrument-Project-Key": key}]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13  # projects CRUD + rotate, collect, records, detail, reads

    codes: dict[str, set[int]] = {}
    for operation in operations:

        @FUZZ_SETTINGS
        @hypothesis.given(case=operation.as_strategy(), caller=st.sampled_from(callers))
        def run(case, caller) -> None:
            response = case.call(headers=caller)
            codes.setdefault(case.operation.label, set()).add(_assert_enveloped(response))
            assert key not in response.text or caller is callers[0]

        run()
    # The fuzzing reached the handlers (successes) and their refusals, not just one of them.
    assert all(codes.get(op.label) for op in operations)
    assert any(0 in found for found in codes.values())
    assert any(found - {0} for found in codes.values())
