"""Builtin rules that read the shape of the call tree: where the request's time ends up
(the hot path) and work done more than once (the same function under several callers).

A sampled call tree merges repeated calls from the same caller into one node (pyinstrument
aggregates them), so call counts are not in it: repeated work shows as the same function
under more than one caller, and repeated calls from one caller only through their spans
(`repeated_calls`, `n_plus_one_queries`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from analysis_service.analyzers.findings import (
    AWAIT_FRAMES,
    BLOCKING_FRAMES,
    DB_DRIVER_FRAMES,
    Finding,
    severity_for,
    time_in_frames,
)
from analysis_service.inputs import AnalysisInput, FunctionKey, is_app_code
from otel_pyinstrument_processor import CallTreeNode

# How a hot-path finding's description starts: reports tell it from the problems by it.
HOT_PATH_PREFIX = "hot path: "
REPEATED_WORK_MIN_SHARE = 0.10
REPEATED_WORK_MIN_CALLERS = 2
# Frames too small to locate anything: a hot path needs a leaf with this share of self time.
HOT_PATH_MIN_SHARE = 0.05


def hot_path(inp: AnalysisInput) -> list[Finding]:
    """The path from the entry frame to the hottest leaf by self time, rendered
    `view > service > repo.query` (app frames, plus the leaf itself when it is library
    code): where the request's time actually ends up, so a reader sees which of the
    request's own functions lead to it. It restates time other findings judge, so it costs
    no score points."""
    if inp.tree is None:
        return []
    whole = inp.tree.total_time or inp.duration or 1.0
    best: tuple[float, list[CallTreeNode]] | None = None
    stack: list[tuple[CallTreeNode, list[CallTreeNode]]] = [(inp.tree, [inp.tree])]
    while stack:
        node, path = stack.pop()
        # Ties go to the first path in depth-first order from the left: deterministic.
        if best is None or node.self_time > best[0]:
            best = (node.self_time, path)
        stack.extend((child, [*path, child]) for child in reversed(node.children))
    assert best is not None
    self_time, path = best
    share = self_time / whole
    if share < HOT_PATH_MIN_SHARE:
        return []
    leaf = path[-1]
    names = [n.function for n in path if is_app_code(n.file) and not n.function.startswith("<")]
    if not names or names[-1] != leaf.function:
        names.append(leaf.function)
    rendered = " > ".join(names)
    leaf_name = leaf.function.rsplit(".", 1)[-1]
    kind = "computation"
    if leaf.function in AWAIT_FRAMES or leaf_name in BLOCKING_FRAMES:
        kind = "io"
    elif leaf_name in DB_DRIVER_FRAMES:
        kind = "database"
    where = leaf.function
    if leaf.file and not leaf.file.startswith("<"):
        where += f" ({leaf.file.rsplit('/', 1)[-1]}:{leaf.line})"
    return [
        Finding(
            {
                "type": kind,
                "severity": severity_for(share),
                "function": rendered,
                "description": (
                    f"{HOT_PATH_PREFIX}{rendered} ({self_time:.3f}s, {share:.0%} of the request, "
                    f"in {where})"
                ),
                "impact": round(min(1.0, share), 4),
            },
            scored=False,
        )
    ]


def repeated_work(inp: AnalysisInput) -> list[Finding]:
    """The same app function called from several callers in one request, together taking at
    least a tenth of it and mostly computing (not waiting on I/O): identical work done more
    than once (a value each caller recomputes instead of receiving), which memoizing or
    hoisting to the common caller removes."""
    if inp.tree is None:
        return []
    whole = inp.tree.total_time or inp.duration or 1.0
    callers: dict[FunctionKey, set[FunctionKey]] = defaultdict(set)
    total: dict[FunctionKey, float] = defaultdict(float)
    # (node, nearest app-code caller, app functions above it): a recursive call's time is
    # already inside its outer call's, so only the outermost one is counted.
    stack: list[tuple[CallTreeNode, FunctionKey | None, frozenset[FunctionKey]]] = [
        (inp.tree, None, frozenset())
    ]
    while stack:
        node, app_parent, above = stack.pop()
        if is_app_code(node.file) and not node.function.startswith("<"):
            key = node.key
            if app_parent is not None and app_parent != key:
                callers[key].add(app_parent)
            if key not in above:
                total[key] += node.total_time
            app_parent, above = key, above | {key}
        stack.extend((child, app_parent, above) for child in node.children)
    # Time spent waiting (DB, I/O, awaits) is judged from the spans by the query and call
    # rules: a shared `query()` helper under several callers is not repeated computation.
    waiting: dict[FunctionKey, float] = defaultdict(float)
    for frames in (DB_DRIVER_FRAMES, BLOCKING_FRAMES, AWAIT_FRAMES):
        for key, seconds in time_in_frames(inp.tree, frames).items():
            waiting[key] += seconds
    findings = []
    for key, parents in sorted(callers.items()):
        share = total[key] / whole
        if len(parents) < REPEATED_WORK_MIN_CALLERS or share < REPEATED_WORK_MIN_SHARE:
            continue
        if waiting[key] >= 0.5 * total[key]:
            continue
        function = key[0]
        names = ", ".join(sorted(p[0] for p in parents))
        findings.append(
            Finding(
                {
                    "type": "computation",
                    "severity": severity_for(share),
                    "function": function,
                    "description": (
                        f"repeated work: {function} runs under {len(parents)} callers ({names}) "
                        f"in one request, {total[key]:.3f}s ({share:.0%}) in all"
                    ),
                    "impact": round(min(1.0, share), 4),
                },
                _suggest_memoize(function, names),
                [f"{function} is computed {len(parents)}+ times per request"],
            )
        )
    return findings


def _suggest_memoize(function: str, callers: str) -> dict[str, Any]:
    return {
        "category": "caching",
        "priority": "high",
        "title": f"Compute {function} once per request",
        "description": (
            f"{function} is called from {callers}. Call it once in their common caller and "
            "pass the result down (hoist it out of the loop), or memoize it when its inputs "
            "repeat."
        ),
        "code_example": _MEMOIZE_EXAMPLE,
        "expected_improvement": "one computation instead of one per caller",
    }


_MEMOIZE_EXAMPLE = """\
# before: every helper recomputes the same table
def order_value(items):
    prices = load_price_list()
    ...
# after: computed once, passed down (or memoized when it depends on few inputs)
prices = load_price_list()
values = [order_value(items, prices) for items in orders]
# or
@functools.lru_cache(maxsize=32)
def load_price_list(currency: str = "EUR") -> dict: ...
"""
