"""Downloads of one request's call tree: speedscope JSON, folded stacks, an OTLP profile
and a self-contained HTML page. The formats themselves are storage_backend.profile_exports'
(the REST API serves the same ones)."""

from __future__ import annotations

import html
import json

from otel_pyinstrument_processor import CallTreeNode
from storage_backend.profile_exports import speedscope_profile
from ui.components.text_tree import TREE_CSS, collapsible_html, console_text


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
