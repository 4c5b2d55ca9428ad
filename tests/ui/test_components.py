"""The UI's call-tree and trace components on a tree profiled from real code."""

from __future__ import annotations

import json

import pytest

from otel_pyinstrument_processor import CallTreeNode, iter_nodes
from storage_backend.profile_exports import speedscope_profile
from tests.ui.profiled import profiled_request
from ui.components.flamegraph import flame_rows, hottest_frames, icicle_figure, short_location
from ui.components.profile_export import profile_html
from ui.components.span_metrics import time_by_category
from ui.components.text_tree import collapsible_html, console_text
from ui.components.waterfall import waterfall_figure, waterfall_rows


@pytest.fixture(scope="module")
def profiled() -> tuple[CallTreeNode, list[dict]]:
    return profiled_request()


def _find(tree: CallTreeNode, function: str) -> CallTreeNode:
    return next(n for n, _ in iter_nodes(tree) if n.function == function)


def test_icicle_rows_keep_every_frame_with_consistent_totals(profiled) -> None:
    tree, _ = profiled
    rows = flame_rows(tree)
    assert len(rows) == sum(1 for _ in iter_nodes(tree))
    assert rows.parents[0] == ""
    index = {node_id: i for i, node_id in enumerate(rows.ids)}
    for i, parent in enumerate(rows.parents[1:], start=1):
        # plotly hides a node whose parent's value is below its children's sum
        siblings = [j for j, p in enumerate(rows.parents) if p == parent]
        assert rows.values[index[parent]] >= sum(rows.values[j] for j in siblings) - 1e-9
        assert i in siblings
    crunch = rows.labels.index("crunch_numbers")
    assert rows.hover[crunch][0].endswith("profiled.py:" + str(_find(tree, "crunch_numbers").line))
    assert rows.values[crunch] >= 40  # ms: the 50 ms CPU spin
    figure = icicle_figure(tree)
    assert figure.data[0].type == "icicle"
    assert list(figure.data[0].labels) == rows.labels


def test_icicle_caps_node_count_and_keeps_parents(profiled) -> None:
    tree, _ = profiled
    rows = flame_rows(tree, max_nodes=3)
    assert 1 <= len(rows) <= 3
    assert all(p == "" or p in rows.ids for p in rows.parents)


def test_hottest_frames_rank_self_time(profiled) -> None:
    tree, _ = profiled
    hot = hottest_frames(tree)
    names = [h["function"] for h in hot]
    assert "crunch_numbers" in names[:3]
    assert hot == sorted(hot, key=lambda h: h["self_ms"], reverse=True)


def test_console_text_looks_like_pyinstrument(profiled) -> None:
    tree, _ = profiled
    text = console_text(tree)
    first = text.splitlines()[0]
    assert first.startswith(f"{tree.total_time:.3f} {tree.function}")
    crunch_line = next(line for line in text.splitlines() if "crunch_numbers" in line)
    assert "profiled.py:" in crunch_line
    assert crunch_line.lstrip("│ ").startswith(("└─", "├─"))
    hidden = console_text(tree, min_share=0.99)
    assert "hidden" in hidden and "crunch_numbers" not in hidden


def test_collapsible_html_escapes_and_opens_the_hot_path(profiled) -> None:
    tree, _ = profiled
    page = collapsible_html(tree)
    assert page.count("<details") == page.count("</details>")
    assert "<details open>" in page
    assert "crunch_numbers" in page
    evil = CallTreeNode("<script>x</script>", "a.py", 1, 1.0, 1.0, 1)
    assert "<script>" not in collapsible_html(evil)


def test_speedscope_evented_profile_is_well_formed(profiled) -> None:
    tree, _ = profiled
    doc = json.loads(json.dumps(speedscope_profile(tree, name="GET /report")))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    profile = doc["profiles"][0]
    assert profile["type"] == "evented" and profile["unit"] == "seconds"
    frames = doc["shared"]["frames"]
    events = profile["events"]
    # Every open has its close, properly nested, never going back in time.
    stack: list[int] = []
    last = 0.0
    for event in events:
        assert event["at"] >= last - 1e-12
        last = event["at"]
        if event["type"] == "O":
            stack.append(event["frame"])
        else:
            assert stack.pop() == event["frame"]
    assert not stack
    assert events[-1]["at"] == pytest.approx(tree.total_time)
    assert profile["endValue"] == pytest.approx(tree.total_time)
    crunch = next(f for f in frames if f["name"] == "crunch_numbers")
    assert crunch["file"].endswith("profiled.py") and crunch["line"] > 0
    # The time between crunch_numbers' open and close is its total time.
    index = frames.index(crunch)
    opened = next(e["at"] for e in events if e["frame"] == index and e["type"] == "O")
    closed = next(e["at"] for e in events if e["frame"] == index and e["type"] == "C")
    assert closed - opened == pytest.approx(_find(tree, "crunch_numbers").total_time, abs=1e-5)


def test_html_export_is_self_contained(profiled) -> None:
    tree, _ = profiled
    page = profile_html(tree, title="GET /report", subtitle="trace abc")
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "http://" not in page.replace("https://", "")
    assert "crunch_numbers" in page and "GET /report" in page


def test_waterfall_nests_children_under_their_parent(profiled) -> None:
    _, spans = profiled
    rows = waterfall_rows(spans)
    assert [r["name"] for r in rows] == ["GET /report", "SELECT rows"]
    assert rows[0]["depth"] == 0 and rows[1]["depth"] == 1
    assert rows[0]["start_ms"] == 0
    assert 4 <= rows[1]["duration_ms"] < rows[0]["duration_ms"]
    figure = waterfall_figure(spans, highlight=rows[0]["span_id"])
    assert len(figure.data[0].y) == 2
    assert [t.strip() for t in figure.layout.yaxis.ticktext] == ["GET /report", "SELECT rows"]
    assert list(figure.data[0].marker.line.width) == [2, 0]


def test_waterfall_survives_orphans_and_cycles() -> None:
    spans = [
        {"span_id": "a", "parent_span_id": "b", "name": "a", "start_ns": 0, "end_ns": 10},
        {"span_id": "b", "parent_span_id": "a", "name": "b", "start_ns": 5, "end_ns": 9},
        {"span_id": "c", "parent_span_id": "zz", "name": "c", "start_ns": 2, "end_ns": 3},
    ]
    assert [r["name"] for r in waterfall_rows(spans)] == ["c"]
    assert waterfall_rows([]) == []


def test_short_location() -> None:
    assert short_location("/srv/app/shop/views.py", 12) == "shop/views.py:12"
    assert short_location("<built-in>", 0) == "<built-in>"
    assert short_location("", 0) == "?"


def test_time_by_category_reads_semconv_and_counts_overlaps_once() -> None:
    ms = 1_000_000
    spans = [
        {"kind": "server", "start_ns": 0, "end_ns": 100 * ms, "attributes": {}},
        {"kind": "client", "start_ns": 10 * ms, "end_ns": 30 * ms,
         "attributes": {"db.system.name": "postgresql"}},
        {"kind": "client", "start_ns": 20 * ms, "end_ns": 40 * ms,  # overlaps the first
         "attributes": {"db.system": "sqlite", "db.statement": "SELECT 1"}},
        {"kind": "client", "start_ns": 50 * ms, "end_ns": 55 * ms,
         "attributes": {"db.system": "redis"}},
        {"kind": "client", "start_ns": 60 * ms, "end_ns": 90 * ms,
         "attributes": {"http.request.method": "GET"}},
        {"kind": "internal", "start_ns": 0, "end_ns": 5 * ms,
         "attributes": {"http.request.method": "GET"}},  # not a call out
    ]  # fmt: skip
    times = time_by_category(spans)
    assert times["database"] == pytest.approx(0.030)
    assert times["cache"] == pytest.approx(0.005)
    assert times["external"] == pytest.approx(0.030)
    assert time_by_category(spans[:1]) == {}
