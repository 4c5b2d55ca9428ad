"""What an analyzer sees of one request: the record, its decoded call tree, its trace's
spans, and a compact summary (the brief's `analysis_input`: performance_summary,
slow_functions, context_info) that every analyzer and every prompt starts from."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from otel_pyinstrument_processor import CallTreeNode, ProfileDecodeError, decode_profile
from storage_backend import ProjectNotFoundError, Store, trace_spans

logger = logging.getLogger(__name__)

TOP_FUNCTIONS = 10
HOT_PATH_DEPTH = 25
_LIBRARY_MARKERS = ("site-packages", "dist-packages", "/lib/python", "<frozen", "<built-in")


class RecordNotFoundError(LookupError):
    """The performance record to analyse does not exist (expired or wrong id)."""


def is_app_code(file: str) -> bool:
    """True for the user's own files: not the standard library, not installed packages."""
    return bool(file) and not file.startswith("<") and not any(m in file for m in _LIBRARY_MARKERS)


def iter_with_owner(
    node: CallTreeNode, owner: CallTreeNode | None = None
) -> Iterator[tuple[CallTreeNode, CallTreeNode | None]]:
    """Yield (node, owner) for the whole tree, where owner is the nearest app-code frame at
    or above the node: library and builtin time is charged to the app function calling it."""
    here = node if is_app_code(node.file) else owner
    yield node, here
    for child in node.children:
        yield from iter_with_owner(child, here)


FunctionKey = tuple[str, str, int]  # (function, file, line)


def self_time_by_app_function(tree: CallTreeNode) -> dict[FunctionKey, float]:
    """Seconds of self time charged to each app function: its own plus the library and
    builtin time below it (until the next app frame)."""
    charged: dict[FunctionKey, float] = defaultdict(float)
    for node, owner in iter_with_owner(tree):
        if owner is not None:
            charged[(owner.function, owner.file, owner.line)] += node.self_time
    return charged


def normalize_statement(statement: str) -> str:
    """A DB statement with literals replaced by `?`, whitespace collapsed: the shape that
    repeats in an N+1 pattern whatever the ids are."""
    text = re.sub(r"'(?:[^']|'')*'", "?", statement)
    text = re.sub(r"\b\d+(?:\.\d+)?\b", "?", text)
    text = re.sub(r"\(\s*\?(?:\s*,\s*\?)*\s*\)", "(?)", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass(slots=True)
class DbSpan:
    system: str
    statement: str
    duration: float


@dataclass(slots=True)
class AnalysisInput:
    """One request, ready to analyse."""

    record: dict[str, Any]
    tree: CallTreeNode | None
    spans: list[dict[str, Any]]
    threshold: float | None = None
    db_spans: list[DbSpan] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return float((self.record.get("performance_metrics") or {}).get("total_duration") or 0)

    def slow_functions(self, limit: int = TOP_FUNCTIONS) -> list[dict[str, Any]]:
        """App functions by the self time charged to them (their own time plus the library
        and builtin time below them), largest first, with their share of the request."""
        if self.tree is None:
            return []
        charged = self_time_by_app_function(self.tree)
        totals: dict[FunctionKey, float] = {}
        for node, owner in iter_with_owner(self.tree):
            if owner is node:
                key = (node.function, node.file, node.line)
                totals[key] = max(totals.get(key, 0.0), node.total_time)
        whole = self.tree.total_time or self.duration or 1.0
        ranked = sorted(charged.items(), key=lambda kv: kv[1], reverse=True)[:limit]
        return [
            {
                "function": f,
                "file": file,
                "line": line,
                "self_time": round(t, 6),
                "total_time": round(totals[(f, file, line)], 6),
                "share": round(t / whole, 4),
            }
            for (f, file, line), t in ranked
            if t > 0
        ]

    def hot_path(self) -> list[dict[str, Any]]:
        """The call path that follows the heaviest child from the root."""
        path = []
        node = self.tree
        while node is not None and len(path) < HOT_PATH_DEPTH:
            path.append(
                {
                    "function": node.function,
                    "file": node.file,
                    "line": node.line,
                    "total_time": round(node.total_time, 6),
                    "self_time": round(node.self_time, 6),
                }
            )
            node = max(node.children, key=lambda c: c.total_time, default=None)
        return path

    def db_statement_groups(self) -> list[dict[str, Any]]:
        """DB calls grouped by normalized statement, most frequent first."""
        groups: dict[tuple[str, str], list[DbSpan]] = defaultdict(list)
        for s in self.db_spans:
            groups[(s.system, normalize_statement(s.statement))].append(s)
        out = [
            {
                "system": system,
                "statement": statement,
                "count": len(items),
                "total_time": round(sum(i.duration for i in items), 6),
            }
            for (system, statement), items in groups.items()
        ]
        return sorted(out, key=lambda g: (g["count"], g["total_time"]), reverse=True)

    def summary(self) -> dict[str, Any]:
        """The brief's `analysis_input`: compact, the same for every analyzer and prompt."""
        record = self.record
        metrics = record.get("performance_metrics") or {}
        return {
            "performance_summary": {
                "endpoint": record.get("endpoint"),
                "total_duration": self.duration,
                "cpu_time": metrics.get("cpu_time"),
                "status_code": (record.get("response_info") or {}).get("status_code"),
                "threshold": self.threshold,
                "span_count": len(self.spans),
                "db_calls": len(self.db_spans),
                "db_time": round(sum(s.duration for s in self.db_spans), 6),
            },
            "slow_functions": self.slow_functions(),
            "context_info": {
                "record_id": record.get("_id"),
                "trace_id": record.get("trace_id"),
                "service": (record.get("service") or {}).get("name"),
                "framework": (record.get("environment") or {}).get("framework"),
                "app_version": (record.get("version_info") or {}).get("app_version"),
                "hot_path": self.hot_path(),
                "db_statements": self.db_statement_groups()[:10],
            },
        }


def _db_span(span: dict[str, Any]) -> DbSpan | None:
    attrs = span.get("attributes") or {}
    system = attrs.get("db.system.name") or attrs.get("db.system")
    if not system:
        return None
    statement = (
        attrs.get("db.query.text")
        or attrs.get("db.statement")
        or attrs.get("db.operation.name")
        or span.get("name", "")
    )
    return DbSpan(str(system), str(statement), float(span.get("duration") or 0))


def load_input(store: Store, record_id: str) -> AnalysisInput:
    """Load a record, decode its call tree and collect its trace's spans in this process
    (the record's own span and everything below it). Raises RecordNotFoundError."""
    record = store.collection("performance_records").find_one({"_id": record_id})
    if record is None:
        raise RecordNotFoundError(f"no performance record {record_id!r}")
    tree = None
    profile = record.get("profile") or {}
    if profile.get("tree"):
        try:
            tree = decode_profile(profile["tree"], profile.get("format"))
        except ProfileDecodeError as exc:
            logger.warning("record %s: call tree not decodable: %s", record_id, exc)
    spans = trace_spans(store.db, record["project_id"], record["trace_id"])
    spans = _descendants(spans, record.get("span_id"))
    threshold = None
    try:
        threshold = store.projects.get(record["project_id"]).config.alert_threshold.response_time
    except ProjectNotFoundError:  # the project may be gone; the analysis still stands
        logger.debug("record %s: project not found", record_id)
    db_spans = [d for d in (_db_span(s) for s in spans) if d is not None]
    return AnalysisInput(record, tree, spans, threshold, db_spans)


def _descendants(spans: list[dict[str, Any]], root_id: str | None) -> list[dict[str, Any]]:
    if not root_id:
        return spans
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        children[s.get("parent_span_id")].append(s)
    out, stack = [], [s for s in spans if s.get("span_id") == root_id]
    while stack:
        s = stack.pop()
        out.append(s)
        stack.extend(children.get(s.get("span_id"), []))
    return out
