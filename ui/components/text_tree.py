"""A call tree as text, the way pyinstrument's console renderer prints it, and as a
collapsible HTML tree (`<details>`) for the request page and the HTML export."""

from __future__ import annotations

import html

from otel_pyinstrument_processor import CallTreeNode
from ui.components.flamegraph import short_location


def console_text(tree: CallTreeNode, *, min_share: float = 0.0, max_depth: int = 60) -> str:
    """pyinstrument-style text: one line per frame, `total_time function  file:line`, with
    box-drawing guides. Frames below `min_share` of the root's time are left out (and say so).
    """
    root_total = max(tree.total_time, 1e-9)
    lines: list[str] = []
    # (node, prefix for its own line, prefix for its children, depth)
    stack: list[tuple[CallTreeNode, str, str, int]] = [(tree, "", "", 0)]
    while stack:
        node, own, below, depth = stack.pop()
        lines.append(
            f"{own}{node.total_time:.3f} {node.function}  {short_location(node.file, node.line)}"
        )
        shown = [c for c in node.children if c.total_time / root_total >= min_share]
        hidden = len(node.children) - len(shown)
        if depth >= max_depth and shown:
            lines.append(f"{below}└─ … {len(shown)} deeper frames")
            continue
        if hidden:
            note = "└─" if not shown else "├─"
            lines.append(f"{below}{note} [{hidden} frames below {min_share:.1%} hidden]")
        for index in range(len(shown) - 1, -1, -1):
            last = index == len(shown) - 1
            stack.append(
                (
                    shown[index],
                    below + ("└─ " if last else "├─ "),
                    below + ("   " if last else "│  "),
                    depth + 1,
                )
            )
    return "\n".join(lines)


def _heat(share: float) -> str:
    if share >= 0.3:
        return "hot"
    if share >= 0.1:
        return "warm"
    return "cool"


def collapsible_html(tree: CallTreeNode, *, open_share: float = 0.1, max_nodes: int = 3000) -> str:
    """The tree as nested `<details>`: frames taking at least `open_share` of the request start
    open, the rest collapsed, so the hot path is visible at once. Escapes every name."""
    root_total = max(tree.total_time, 1e-9)
    count = 0

    def render(node: CallTreeNode) -> str:
        nonlocal count
        count += 1
        share = node.total_time / root_total
        head = (
            f"<span class='t {_heat(share)}'>{node.total_time * 1000:,.1f} ms</span> "
            f"<span class='f'>{html.escape(node.function or '?')}</span> "
            f"<span class='l'>{html.escape(short_location(node.file, node.line))}</span>"
            f"<span class='s'>self {node.self_time * 1000:,.1f} ms · {share:.0%}</span>"
        )
        if not node.children or count > max_nodes:
            return f"<div class='leaf'>{head}</div>"
        inner = "".join(render(c) for c in node.children)
        state = " open" if share >= open_share else ""
        return f"<details{state}><summary>{head}</summary>{inner}</details>"

    return f"<div class='pystrument-tree'>{render(tree)}</div>"


TREE_CSS = """
.pystrument-tree { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 13px; line-height: 1.55; }
.pystrument-tree details > details, .pystrument-tree details > .leaf {
  margin-left: 1.1em; border-left: 1px dashed #cbd5e1; padding-left: .6em; }
.pystrument-tree summary { cursor: pointer; list-style: '▸ '; }
.pystrument-tree details[open] > summary { list-style: '▾ '; }
.pystrument-tree .leaf { padding-left: 1.4em; }
.pystrument-tree .t { display: inline-block; min-width: 6.5em; text-align: right;
  font-weight: 600; }
.pystrument-tree .hot { color: #dc2626; } .pystrument-tree .warm { color: #d97706; }
.pystrument-tree .cool { color: #64748b; }
.pystrument-tree .f { font-weight: 600; }
.pystrument-tree .l { color: #64748b; margin-left: .5em; }
.pystrument-tree .s { color: #94a3b8; margin-left: .8em; font-size: 11px; }
"""
