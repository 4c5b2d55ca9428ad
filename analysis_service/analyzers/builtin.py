"""The builtin analyzer: offline, deterministic rules over the call tree and the spans.

Each rule is a plain function `rule(inp) -> list[Finding]` with a docstring saying what it
looks for; `RULES` is the pipeline (the call-tree shape rules, hot path and repeated work,
live in `tree_rules`). A finding carries one bottleneck (the brief's
`bottleneck_analysis` item), an optional suggestion (with a code example when the pattern is
recognised) and the risks it implies. The score starts at 100 and loses points per scored
finding by severity, and for exceeding the project's threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analysis_service.analyzers.base import AnalyzerOutput
from analysis_service.analyzers.findings import (
    AWAIT_FRAMES,
    BLOCKING_FRAMES,
    DB_DRIVER_FRAMES,
    Finding,
    severity_for,
    time_in_frames,
)
from analysis_service.analyzers.tree_rules import hot_path, repeated_work
from analysis_service.inputs import AnalysisInput, FunctionKey, is_app_code, iter_with_owner
from analysis_service.result_schema import validate_results
from otel_pyinstrument_processor import CallTreeNode

N_PLUS_ONE_MIN_CALLS = 5
REPEATED_MIN_CALLS = 3
HOT_FUNCTION_MIN_SHARE = 0.10
_SEVERITY_PENALTY = {"critical": 30, "high": 18, "medium": 8, "low": 3}


def _is_async(inp: AnalysisInput) -> bool:
    framework = str((inp.record.get("environment") or {}).get("framework") or "").lower()
    if any(word in framework for word in ("asgi", "fastapi", "starlette", "aiohttp")):
        return True
    return inp.tree is not None and any(
        "asyncio" in node.file for node, _ in iter_with_owner(inp.tree)
    )


# Frames that hand sync work to a worker thread (Starlette/FastAPI `def` endpoints, anyio,
# asyncio, asgiref): app code below them runs off the event loop, so its waits block a
# thread of the pool, not the loop.
WORKER_THREAD_FRAMES = frozenset(
    {"run_sync_in_worker_thread", "run_in_threadpool", "to_thread", "run_in_executor",
     "sync_to_async", "SyncToAsync.__call__"}
)  # fmt: skip


def _off_the_loop(tree: CallTreeNode | None) -> set[FunctionKey]:
    """App functions that run only below a worker-thread frame (never on the event loop)."""
    on_loop: set[FunctionKey] = set()
    off_loop: set[FunctionKey] = set()
    stack: list[tuple[CallTreeNode, bool]] = [(tree, False)] if tree is not None else []
    while stack:
        node, in_thread = stack.pop()
        in_thread = in_thread or node.function.rsplit(".", 1)[-1] in WORKER_THREAD_FRAMES
        if is_app_code(node.file):
            (off_loop if in_thread else on_loop).add(node.key)
        stack.extend((child, in_thread) for child in node.children)
    return off_loop - on_loop


def hot_functions(inp: AnalysisInput) -> list[Finding]:
    """App functions that take at least a tenth of the request by self time (library time
    charged to the app function calling it). CPU-bound ones are `computation`, the ones
    mostly waiting in blocking calls are `io` (in async code, unless it runs in a worker
    thread: blocking the event loop, which stalls every other request on it); ones mostly
    suspended in an `await` are `io` that does not block; ones mostly in DB-driver calls are
    left to the query rules."""
    findings = []
    blocking = time_in_frames(inp.tree, BLOCKING_FRAMES)
    awaiting = time_in_frames(inp.tree, AWAIT_FRAMES)
    in_db = time_in_frames(inp.tree, DB_DRIVER_FRAMES)
    is_async = _is_async(inp)
    in_worker_thread = _off_the_loop(inp.tree) if is_async else set()
    for fn in inp.slow_functions():
        if fn["share"] < HOT_FUNCTION_MIN_SHARE:
            continue
        key = (fn["function"], fn["file"], fn["line"])
        waiting = blocking.get(key, 0.0)
        if in_db.get(key, 0.0) >= 0.5 * fn["self_time"]:
            continue  # database time: judged by the query rules, from the spans
        where = f"{fn['function']} ({fn['file'].rsplit('/', 1)[-1]}:{fn['line']})"
        pct = f"{fn['share']:.0%}"
        if awaiting.get(key, 0.0) >= 0.5 * fn["self_time"]:
            desc = (f"{where} awaits {fn['self_time']:.3f}s ({pct} of the request) on I/O; "
                    "the event loop stays free for other requests meanwhile")  # fmt: skip
            suggestion = _suggest_concurrent_awaits(fn["function"])
            risk = f"{fn['function']}'s latency is the request's latency"
            kind = "io"
        elif waiting >= 0.5 * fn["self_time"]:
            if is_async and key not in in_worker_thread:
                desc = (f"{where} blocks the event loop for {fn['self_time']:.3f}s ({pct} of "
                        "the request) in a blocking call inside async code")  # fmt: skip
                suggestion = _suggest_async_io(fn["function"])
                risk = f"{fn['function']} stalls every concurrent request on the event loop"
            else:
                desc = (f"{where} waits {fn['self_time']:.3f}s ({pct} of the request) in "
                        "blocking I/O")  # fmt: skip
                suggestion = _suggest_cache_io(fn["function"])
                risk = f"{fn['function']} ties up a worker thread while it waits"
            kind = "io"
        else:
            desc = f"{where} computes for {fn['self_time']:.3f}s ({pct} of the request)"
            suggestion = _suggest_algorithm(fn["function"])
            risk = f"{fn['function']}'s cost grows with its input: CPU saturation under load"
            kind = "computation"
        findings.append(
            Finding(
                {
                    "type": kind,
                    "severity": severity_for(fn["share"]),
                    "function": fn["function"],
                    "description": desc,
                    "impact": min(1.0, fn["share"]),
                },
                suggestion,
                [risk],
            )
        )
    return findings


def n_plus_one_queries(inp: AnalysisInput) -> list[Finding]:
    """Many DB calls with the same statement shape in one request: an N+1 query pattern
    (one query per item of a list instead of one query for the list)."""
    findings = []
    whole = inp.duration or 1.0
    for group in inp.db_statement_groups():
        if group["count"] < N_PLUS_ONE_MIN_CALLS:
            continue
        share = min(1.0, group["total_time"] / whole)
        findings.append(
            Finding(
                {
                    "type": "database",
                    "severity": "high" if group["count"] >= 20 else "medium",
                    "function": _db_caller(inp) or group["statement"][:80],
                    "description": (
                        f"N+1 query pattern: {group['count']} {group['system']} queries of the "
                        f"same shape `{group['statement'][:160]}` ({group['total_time']:.3f}s)"
                    ),
                    "impact": round(max(share, 0.0), 4),
                },
                {
                    "category": "database",
                    "priority": "high",
                    "title": "Replace the per-item query with one query (N+1)",
                    "description": (
                        f"The request runs `{group['statement'][:120]}` {group['count']} times. "
                        "Fetch all rows at once with a JOIN or `IN (...)`, then group in Python."
                    ),
                    "code_example": _N_PLUS_ONE_EXAMPLE,
                    "expected_improvement": f"{group['count']} round trips become 1",
                },
                [f"query count grows with the data: {group['count']} queries per request now"],
                ["the database connection pool runs dry under load"],
            )
        )
    return findings


def repeated_calls(inp: AnalysisInput) -> list[Finding]:
    """The same outgoing call (non-DB CLIENT span with the same name) made repeatedly in one
    request: repeated identical work that a cache or a batch call would remove."""
    counts: dict[str, list[float]] = {}
    for span in inp.spans:
        attrs = span.get("attributes") or {}
        if span.get("kind") != "client" or attrs.get("db.system") or attrs.get("db.system.name"):
            continue
        target = attrs.get("url.full") or attrs.get("http.url") or span.get("name", "")
        counts.setdefault(str(target), []).append(float(span.get("duration") or 0))
    findings = []
    whole = inp.duration or 1.0
    for target, durations in counts.items():
        if len(durations) < REPEATED_MIN_CALLS:
            continue
        share = min(1.0, sum(durations) / whole)
        findings.append(
            Finding(
                {
                    "type": "io",
                    "severity": severity_for(share),
                    "function": target[:120],
                    "description": f"the same call {target!r} is made {len(durations)} times",
                    "impact": round(share, 4),
                },
                {
                    "category": "caching",
                    "priority": "medium",
                    "title": f"Call {target[:60]} once per request (or cache it)",
                    "description": "Identical calls return identical data: reuse the result.",
                    "code_example": _CACHE_EXAMPLE,
                    "expected_improvement": f"{len(durations) - 1} fewer calls per request",
                },
                [f"{len(durations)} identical outgoing calls per request"],
            )
        )
    return findings


def _db_caller(inp: AnalysisInput) -> str | None:
    """The app-code call path ("list_orders > load_items > query") under which the most
    DB-driver time is spent, if the call tree shows it."""
    if inp.tree is None:
        return None
    charged: dict[tuple[str, ...], float] = {}
    stack: list[tuple[CallTreeNode, tuple[str, ...]]] = [(inp.tree, ())]
    while stack:
        node, path = stack.pop()
        if is_app_code(node.file) and not node.function.startswith("<"):
            path = (*path, node.function)
        elif path and node.function.rsplit(".", 1)[-1] in DB_DRIVER_FRAMES:
            charged[path] = charged.get(path, 0.0) + node.total_time
            continue
        stack.extend((child, path) for child in node.children)
    return " > ".join(max(charged, key=lambda k: charged[k])) if charged else None


Rule = Callable[[AnalysisInput], list[Finding]]
RULES: list[Rule] = [hot_functions, n_plus_one_queries, repeated_calls, repeated_work, hot_path]


def score(inp: AnalysisInput, findings: list[Finding]) -> float:
    """100 minus a penalty per finding by severity and for exceeding the threshold."""
    penalty = sum(_SEVERITY_PENALTY[f.bottleneck["severity"]] for f in findings if f.scored)
    if inp.threshold and inp.duration > inp.threshold:
        penalty += min(30.0, 10.0 * inp.duration / inp.threshold)
    return round(max(0.0, min(100.0, 100.0 - penalty)), 1)


class BuiltinAnalyzer:
    """Runs `RULES` in order; deterministic for the same input."""

    provider = "builtin"

    def __init__(self, rules: list[Rule] | None = None):
        self.rules = rules if rules is not None else RULES

    def analyze(self, inp: AnalysisInput) -> AnalyzerOutput:
        findings = [f for rule in self.rules for f in rule(inp)]
        # Problems first, largest first; the hot path (locating, not judging) after them.
        findings.sort(key=lambda f: (f.scored, f.bottleneck["impact"]), reverse=True)
        recommendations = [s["title"] for f in findings if (s := f.suggestion)]
        if inp.tree is None:
            recommendations.append("no call tree was recorded: check the profiler's sampling")
        results = validate_results(
            {
                "performance_score": score(inp, findings),
                "bottleneck_analysis": [f.bottleneck for f in findings],
                "optimization_suggestions": [f.suggestion for f in findings if f.suggestion],
                "risk_assessment": {
                    "current_risks": [r for f in findings for r in f.risks],
                    "potential_issues": [i for f in findings for i in f.issues],
                    "recommendations": recommendations,
                },
            }
        )
        # Fewer signals, less confidence: a request without a tree is judged by spans only.
        confidence = 0.9 if inp.tree is not None else 0.5
        return AnalyzerOutput(results, provider="builtin", model="rules", version="1",
                              confidence=confidence)  # fmt: skip


def _suggest_algorithm(function: str) -> dict[str, Any]:
    return {
        "category": "algorithm",
        "priority": "high",
        "title": f"Reduce the work done in {function}",
        "description": (
            f"{function} is CPU-bound. Look for nested loops over the same data (O(n^2)), "
            "recomputation of values that do not change per request, and work that can be "
            "precomputed or cached."
        ),
        "code_example": _ALGORITHM_EXAMPLE,
        "expected_improvement": "from quadratic to linear-logarithmic time on the hot loop",
    }


def _suggest_cache_io(function: str) -> dict[str, Any]:
    return {
        "category": "caching",
        "priority": "high",
        "title": f"Cache or parallelise the blocking call in {function}",
        "description": (
            f"{function} waits on I/O. Cache its result with a short TTL if it changes "
            "rarely, set a timeout, or run it concurrently with the request's other work."
        ),
        "code_example": _CACHE_EXAMPLE,
        "expected_improvement": "the wait disappears on cache hits",
    }


def _suggest_async_io(function: str) -> dict[str, Any]:
    return {
        "category": "architecture",
        "priority": "high",
        "title": f"Do not block the event loop in {function}",
        "description": "Use an async client, or move the call off the loop with to_thread.",
        "code_example": _ASYNC_EXAMPLE,
        "expected_improvement": "other requests keep running while this one waits",
    }


def _suggest_concurrent_awaits(function: str) -> dict[str, Any]:
    return {
        "category": "caching",
        "priority": "medium",
        "title": f"Cache or overlap the awaited call in {function}",
        "description": (
            f"{function} waits without blocking the loop, but the request waits for it. "
            "Cache the result, or await independent calls together with asyncio.gather."
        ),
        "code_example": _GATHER_EXAMPLE,
        "expected_improvement": "independent waits overlap instead of adding up",
    }


_GATHER_EXAMPLE = """\
# before: two awaits one after the other
price = await fetch_price(item_id)
stock = await fetch_stock(item_id)
# after: both in flight at once
price, stock = await asyncio.gather(fetch_price(item_id), fetch_stock(item_id))
"""

_N_PLUS_ONE_EXAMPLE = """\
# before: one query per order
for order in orders:
    order.items = db.execute("SELECT sku, qty FROM items WHERE order_id = ?", (order.id,))
# after: one query for all orders
ids = [o.id for o in orders]
marks = ",".join("?" * len(ids))
rows = db.execute(f"SELECT order_id, sku, qty FROM items WHERE order_id IN ({marks})", ids)
by_order = collections.defaultdict(list)
for order_id, sku, qty in rows:
    by_order[order_id].append({"sku": sku, "qty": qty})
"""

_ALGORITHM_EXAMPLE = """\
# before: O(n^2) pairwise loop
total = sum(abs(a - b) for a in values for b in values)
# after: O(n log n) with sorted prefix sums
xs = sorted(values)
total = 2 * sum((2 * i - len(xs) + 1) * x for i, x in enumerate(xs))
"""

_CACHE_EXAMPLE = """\
import functools, time

@functools.lru_cache(maxsize=1)
def _rates(bucket: int) -> dict:
    return fetch_exchange_rates()

rates = _rates(int(time.time() // 300))  # refreshed every 5 minutes
"""

_ASYNC_EXAMPLE = """\
# before (inside async def): time.sleep / requests.get block the loop
# after:
async with httpx.AsyncClient(timeout=5) as client:
    resp = await client.get(url)
# or, for a sync-only library:
result = await asyncio.to_thread(blocking_call, arg)
"""
