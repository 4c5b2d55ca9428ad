"""Performance reports of one project over a period: endpoints with percentiles, the
slowest requests, the top functions by self time, and a summary of the analyses (with
the most frequent hot paths they found).

`build_report` returns plain JSON-able data (stored as the report job's result);
`render_markdown` and `render_html` turn it into the downloadable documents.
"""

from __future__ import annotations

import html
import logging
import math
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from analysis_service.analyzers.tree_rules import HOT_PATH_PREFIX
from analysis_service.inputs import self_time_by_app_function
from otel_pyinstrument_processor import ProfileDecodeError, decode_profile
from storage_backend import Store

logger = logging.getLogger(__name__)

MAX_RECORDS = 100_000  # a report reads durations only; beyond this it says it sampled
SLOWEST = 10
PROFILED_FOR_FUNCTIONS = 50
TOP_FUNCTIONS = 15


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def build_report(store: Store, project_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The report data for records with `start <= timestamp < end`."""
    records = store.collection("performance_records")
    window = {"project_id": project_id, "timestamp": {"$gte": start, "$lt": end}}
    durations: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    count = 0
    for doc in records.find(
        window, {"endpoint": 1, "performance_metrics.total_duration": 1, "is_error": 1}
    ).limit(MAX_RECORDS):
        count += 1
        d = float((doc.get("performance_metrics") or {}).get("total_duration") or 0)
        durations[doc["endpoint"]].append(d)
        errors[doc["endpoint"]] += bool(doc.get("is_error"))
    endpoints = []
    for endpoint, values in durations.items():
        values.sort()
        endpoints.append(
            {
                "endpoint": endpoint,
                "count": len(values),
                "errors": errors[endpoint],
                "mean": round(sum(values) / len(values), 6),
                "p50": round(percentile(values, 50), 6),
                "p95": round(percentile(values, 95), 6),
                "p99": round(percentile(values, 99), 6),
                "max": round(values[-1], 6),
            }
        )
    endpoints.sort(key=lambda e: e["p95"], reverse=True)
    slowest = [
        {
            "record_id": d["_id"],
            "endpoint": d["endpoint"],
            "duration": round(float(d["performance_metrics"]["total_duration"]), 6),
            "status_code": (d.get("response_info") or {}).get("status_code"),
            "timestamp": d["timestamp"].isoformat(),
            "trace_id": d.get("trace_id"),
        }
        for d in records.find(
            window,
            {
                "endpoint": 1,
                "performance_metrics": 1,
                "response_info": 1,
                "timestamp": 1,
                "trace_id": 1,
            },
        )
        .sort("performance_metrics.total_duration", -1)
        .limit(SLOWEST)
    ]
    return {
        "project_id": project_id,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "generated_at": datetime.now(start.tzinfo).isoformat(),
        "request_count": count,
        "sampled": count >= MAX_RECORDS,
        "endpoints": endpoints,
        "slowest_requests": slowest,
        "top_functions": _top_functions(store, window),
        "analyses": _analyses_summary(store, project_id, start, end),
    }


def _top_functions(store: Store, window: dict[str, Any]) -> list[dict[str, Any]]:
    """App functions by self time summed over the slowest profiled requests."""
    self_time: dict[tuple[str, str, int], float] = defaultdict(float)
    seen_in: Counter[tuple[str, str, int]] = Counter()
    query = {**window, "profile.tree": {"$exists": True, "$ne": None}}
    cursor = (
        store.collection("performance_records")
        .find(query, {"profile": 1})
        .sort("performance_metrics.total_duration", -1)
        .limit(PROFILED_FOR_FUNCTIONS)
    )
    for doc in cursor:
        try:
            tree = decode_profile(doc["profile"]["tree"], doc["profile"].get("format"))
        except ProfileDecodeError:
            continue
        charged = self_time_by_app_function(tree)
        for key, seconds in charged.items():
            self_time[key] += seconds
        seen_in.update(charged.keys())
    ranked = sorted(self_time.items(), key=lambda kv: kv[1], reverse=True)[:TOP_FUNCTIONS]
    return [
        {
            "function": f,
            "file": file,
            "line": line,
            "self_time": round(t, 6),
            "requests": seen_in[(f, file, line)],
        }
        for (f, file, line), t in ranked
    ]


def _analyses_summary(store: Store, project_id: str, start: datetime, end: datetime) -> dict:
    analyses = store.analyses.history(project_id, since=start, until=end, limit=1000)
    statuses = Counter(a.get("status") for a in analyses)
    kinds: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    scores = []
    for a in analyses:
        results = a.get("analysis_results") or {}
        if "performance_score" in results:
            scores.append(results["performance_score"])
        for b in results.get("bottleneck_analysis") or []:
            if b["description"].startswith(HOT_PATH_PREFIX):  # where time goes, not a problem
                paths[b["function"]] += 1
                continue
            kinds[b["type"]] += 1
            functions[b["function"]] += 1
    return {
        "count": len(analyses),
        "by_status": dict(statuses),
        "mean_score": round(sum(scores) / len(scores), 1) if scores else None,
        "bottleneck_types": dict(kinds.most_common()),
        "top_bottlenecks": [{"function": f, "count": n} for f, n in functions.most_common(10)],
        "hot_paths": [{"path": p, "count": n} for p, n in paths.most_common(10)],
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's sections as (title, header, rows) of display strings."""
    a = report["analyses"]
    return [
        ("Endpoints", ["Endpoint", "Requests", "Errors", "p50", "p95", "p99", "Max"],
         [[e["endpoint"], str(e["count"]), str(e["errors"]), _ms(e["p50"]), _ms(e["p95"]),
           _ms(e["p99"]), _ms(e["max"])] for e in report["endpoints"]]),
        ("Slowest requests", ["Endpoint", "Duration", "Status", "Time", "Record"],
         [[s["endpoint"], _ms(s["duration"]), str(s["status_code"]), s["timestamp"],
           s["record_id"]] for s in report["slowest_requests"]]),
        ("Top functions by self time", ["Function", "File:line", "Self time", "Requests"],
         [[f["function"], f"{f['file']}:{f['line']}", _ms(f["self_time"]), str(f["requests"])]
          for f in report["top_functions"]]),
        ("Analyses", ["Analyses", "By status", "Mean score", "Bottleneck types",
                      "Most frequent bottlenecks"],
         [[str(a["count"]), ", ".join(f"{k}: {v}" for k, v in a["by_status"].items()) or "-",
           str(a["mean_score"] if a["mean_score"] is not None else "-"),
           ", ".join(f"{k}: {v}" for k, v in a["bottleneck_types"].items()) or "-",
           ", ".join(f"{b['function']} ({b['count']})" for b in a["top_bottlenecks"]) or "-"]]),
        ("Hot paths", ["Hot path (entry > hottest leaf)", "Analyses"],
         [[h["path"], str(h["count"])] for h in a["hot_paths"]]),
    ]  # fmt: skip


def _title(report: dict[str, Any]) -> str:
    return f"Performance report: {report['project_id']}"


def _period(report: dict[str, Any]) -> str:
    return (f"{report['start']} to {report['end']}, {report['request_count']} requests"
            + (" (sampled)" if report.get("sampled") else ""))  # fmt: skip


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown document."""
    out = [f"# {_title(report)}", "", _period(report), ""]
    for title, header, rows in _tables(report):
        out += [f"## {title}", ""]
        if not rows:
            out += ["_none_", ""]
            continue
        cell = lambda s: s.replace("|", "\\|")  # noqa: E731 - a table cell may hold a pipe
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


def render_html(report: dict[str, Any]) -> str:
    """The report as a standalone HTML page (every value escaped)."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(_title(report))}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>",
        f"<h1>{e(_title(report))}</h1><p>{e(_period(report))}</p>",
    ]
    for title, header, rows in _tables(report):
        parts.append(f"<h2>{e(title)}</h2>")
        if not rows:
            parts.append("<p><em>none</em></p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
