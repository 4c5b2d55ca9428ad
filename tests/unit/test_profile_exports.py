"""A request's call tree in other tools' formats (`storage_backend.profile_exports`): every
node's self time comes back as one stack, whatever the format."""

from __future__ import annotations

import json

from opentelemetry.proto.profiles.v1development.profiles_pb2 import ProfilesData

from otel_pyinstrument_processor import CallTreeNode
from storage_backend.profile_exports import folded_stacks, otlp_json, otlp_profiles

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _tree() -> CallTreeNode:
    query = CallTreeNode("query", "db.py", 9, 0.2, 0.2, 20)
    render = CallTreeNode("render;html", "tpl.py", 3, 0.05, 0.05, 5)
    view = CallTreeNode("view", "app.py", 12, 0.3, 0.05, 30, [query, render])
    return CallTreeNode("handle", "wsgi.py", 1, 0.31, 0.01, 31, [view])


def _expected() -> dict[tuple[str, ...], float]:
    return {
        ("handle",): 0.01,
        ("handle", "view"): 0.05,
        ("handle", "view", "query"): 0.2,
        ("handle", "view", "render;html"): 0.05,
    }


def test_folded_stacks_are_one_line_per_node_with_self_time_in_microseconds():
    lines = folded_stacks(_tree()).splitlines()
    assert lines == [
        "handle (wsgi.py:1) 10000",
        "handle (wsgi.py:1);view (app.py:12) 50000",
        "handle (wsgi.py:1);view (app.py:12);query (db.py:9) 200000",
        # the format has no escape: a semicolon in a name would split the frame
        "handle (wsgi.py:1);view (app.py:12);render:html (tpl.py:3) 50000",
    ]


def _stacks(data: ProfilesData) -> dict[tuple[str, ...], int]:
    d = data.dictionary
    (profile,) = data.resource_profiles[0].scope_profiles[0].profiles
    out = {}
    for sample in profile.samples:
        names = []
        for index in d.stack_table[sample.stack_index].location_indices:  # leaf first
            (line,) = d.location_table[index].lines
            names.append(d.string_table[d.function_table[line.function_index].name_strindex])
        out[tuple(reversed(names))] = sample.values[0]
    return out


def test_an_otlp_profile_rebuilds_every_stack_and_links_it_to_the_span():
    data = otlp_profiles(
        _tree(),
        trace_id=TRACE,
        span_id=SPAN,
        start_unix_nano=1_700_000_000_000_000_000,
        duration_nano=310_000_000,
        resource={"service.name": "shop"},
        interval_seconds=0.001,
    )
    data = ProfilesData.FromString(data.SerializeToString())  # what a consumer parses
    d = data.dictionary
    # The schema's rule: each table starts with its zero value.
    assert d.string_table[0] == "" and d.stack_table[0].location_indices == []
    assert not d.function_table[0].name_strindex and not d.link_table[0].trace_id
    assert _stacks(data) == {k: round(v * 1e9) for k, v in _expected().items()}
    (profile,) = data.resource_profiles[0].scope_profiles[0].profiles
    assert {d.link_table[s.link_index].trace_id.hex() for s in profile.samples} == {TRACE}
    assert {d.link_table[s.link_index].span_id.hex() for s in profile.samples} == {SPAN}
    kind = profile.sample_type
    assert [d.string_table[kind.type_strindex], d.string_table[kind.unit_strindex]] == [
        "wall",
        "nanoseconds",
    ]
    assert profile.period == 1_000_000 and profile.duration_nano == 310_000_000
    resource = data.resource_profiles[0].resource.attributes[0]
    assert (resource.key, resource.value.string_value) == ("service.name", "shop")
    # A function met on several paths is one function and one location.
    assert len(d.function_table) == 1 + 4 and len(d.location_table) == 1 + 4


def test_otlp_json_writes_ids_in_hex_as_otlp_says():
    data = otlp_profiles(_tree(), trace_id=TRACE, span_id=SPAN, start_unix_nano=1, duration_nano=2)
    link = json.loads(otlp_json(data))["dictionary"]["linkTable"][1]
    assert link == {"traceId": TRACE, "spanId": SPAN}


def test_a_stack_as_deep_as_the_recursion_limit_exports():
    leaf = CallTreeNode("f", "r.py", 1, 0.001, 0.001, 1)
    for _ in range(5000):
        leaf = CallTreeNode("f", "r.py", 1, 0.001, 0.0, 1, [leaf])
    assert folded_stacks(leaf).count(";") == 5000
    data = otlp_profiles(leaf, trace_id=TRACE, span_id=SPAN, start_unix_nano=1, duration_nano=1)
    assert len(data.dictionary.stack_table[1].location_indices) == 5001
