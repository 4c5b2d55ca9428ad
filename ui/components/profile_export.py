"""Downloads of one request's call tree: speedscope JSON and a self-contained HTML page.

speedscope (https://www.speedscope.app) opens the JSON as an "evented" profile (its file
format schema: https://www.speedscope.app/file-format-schema.json): each frame opens and
closes once per call-tree node, children laid end to end inside their parent and the
parent's self time after them, so the time-ordered view and the left-heavy view both show
the tree as recorded.
"""

from __future__ import annotations

import html
import json
from typing import Any

from otel_pyinstrument_processor import CallTreeNode
from ui.components.text_tree import TREE_CSS, collapsible_html, console_text

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def speedscope_profile(tree: CallTreeNode, *, name: str = "request") -> dict[str, Any]:
    """The tree as a speedscope file (a dict; `json.dumps` it). Times in seconds."""
    frames: list[dict[str, Any]] = []
    frame_index: dict[tuple[str, str, int], int] = {}
    events: list[dict[str, Any]] = []

    def frame_of(node: CallTreeNode) -> int:
        key = (node.function, node.file, node.line)
        if key not in frame_index:
            frame_index[key] = len(frames)
            frame: dict[str, Any] = {"name": node.function or "?"}
            if node.file:
                frame["file"] = node.file
            if node.line:
                frame["line"] = node.line
            frames.append(frame)
        return frame_index[key]

    # Iterative walk: (node, start, phase) where phase 0 = open, 1 = close.
    stack: list[tuple[CallTreeNode, float, int]] = [(tree, 0.0, 0)]
    while stack:
        node, start, phase = stack.pop()
        frame = frame_of(node)
        if phase == 1:
            events.append({"type": "C", "frame": frame, "at": start + node.total_time})
            continue
        events.append({"type": "O", "frame": frame, "at": start})
        stack.append((node, start, 1))
        # Children in order; a child never ends after its parent (clamped for rounding).
        cursor = start
        placed: list[tuple[CallTreeNode, float]] = []
        for child in node.children:
            placed.append((child, cursor))
            cursor = min(cursor + child.total_time, start + node.total_time)
        for child, child_start in reversed(placed):
            stack.append((_clamped(child, start + node.total_time - child_start), child_start, 0))
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        "exporter": "pystrument",
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "evented",
                "name": name,
                "unit": "seconds",
                "startValue": 0.0,
                "endValue": tree.total_time,
                "events": events,
            }
        ],
    }


def _clamped(node: CallTreeNode, room: float) -> CallTreeNode:
    """`node`, or a copy whose total is cut to `room` when rounding made it overflow its
    parent (speedscope rejects a child closing after its parent)."""
    if node.total_time <= room:
        return node
    return CallTreeNode(
        node.function,
        node.file,
        node.line,
        max(room, 0.0),
        node.self_time,
        node.sample_count,
        node.children,
    )


def speedscope_json(tree: CallTreeNode, *, name: str = "request") -> str:
    return json.dumps(speedscope_profile(tree, name=name))


def profile_html(tree: CallTreeNode, *, title: str, subtitle: str = "") -> str:
    """A self-contained page (no scripts, no network) with the collapsible tree and the
    console text, to attach to a ticket or open offline."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)} · pystrument</title>
<style>
body {{ font-family: -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem; color: #0f172a; }}
h1 {{ font-size: 1.3rem; margin-bottom: .2rem; }} .sub {{ color: #64748b; margin-bottom: 1.5rem; }}
pre {{ background: #0f172a; color: #e2e8f0; padding: 1rem; border-radius: 8px; overflow: auto;
  font-size: 12px; }}
{TREE_CSS}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="sub">{html.escape(subtitle)} · {tree.total_time * 1000:,.1f} ms profiled ·
{tree.sample_count} samples · exported by pystrument</div>
{collapsible_html(tree)}
<h2>As text</h2>
<pre>{html.escape(console_text(tree, min_share=0.005))}</pre>
</body></html>
"""
