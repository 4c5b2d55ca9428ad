"""Reading a trace's spans back from the `spans` collection: the one reader of that
collection's span lists (the request detail and the analyzers use it), so the stored form
(span_codec) can change without them knowing."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from storage_backend.errors import translate_errors
from storage_backend.schema import SPANS
from storage_backend.span_codec import document_spans


def trace_spans(db: Database, project_id: str, trace_id: str) -> list[dict[str, Any]]:
    """Every stored span of a trace in a project, in no particular order.

    Each span is a dict of the fields listed in docs/data-model.md (`trace_id`, `span_id`,
    `parent_span_id`, `name`, `kind`, `start_ns`, `end_ns`, `duration`, `status_code`,
    `status_message`, `attributes`, `events`, `links`, `scope`) plus `service_name`, the
    `service.name` of the process that sent it. Raises StoreError if the store fails."""
    spans: list[dict[str, Any]] = []
    with translate_errors():
        # Documents now hold a request's spans (`trace_ids`); older ones one trace's
        # (`trace_id`). Two index-backed finds rather than an $or the server may scan for.
        docs = [
            *db[SPANS].find({"project_id": project_id, "trace_ids": trace_id}),
            *db[SPANS].find({"project_id": project_id, "trace_id": trace_id}),
        ]
    for doc in docs:
        service = doc.get("service_name")
        for span in document_spans(doc):
            if span.setdefault("trace_id", doc.get("trace_id")) == trace_id:
                span["service_name"] = service
                spans.append(span)
    return spans
