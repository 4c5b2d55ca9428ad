"""One request's call tree in the formats other profiling tools read.

DESIGN.md's interop with profilers: the stored tree keeps, per node, function, file, line,
total and self time and sample count, so its stacks can be rebuilt without re-profiling:
one stack per node with self time, weighted by that self time.

- `folded_stacks`: Brendan Gregg's collapsed format (`root;child;leaf <value>` per line),
  which flamegraph.pl, speedscope, inferno and Pyroscope's `/ingest?format=folded` read.
- `otlp_profiles`: an OpenTelemetry Profiles message (`ProfilesData`, the
  `opentelemetry.proto.profiles.v1development` schema shipped in opentelemetry-proto
  1.45.1: alpha, it may still change), wall time in nanoseconds, every sample linked to the
  request's span through the dictionary's `link_table`, the way OTel profilers link theirs.
- `speedscope_profile`: speedscope's own evented format (see its docstring).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.profiles.v1development import profiles_pb2 as otlp
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_pyinstrument_processor import CallTreeNode, iter_nodes

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
SCOPE_NAME = "pystrument"


def frame_label(node: CallTreeNode) -> str:
    """`function (file:line)`, the frame name used by the text exports."""
    where = f"{node.file}:{node.line}" if node.file else ""
    return f"{node.function or '?'} ({where})" if where else node.function or "?"


def self_time_stacks(tree: CallTreeNode) -> Iterator[tuple[list[CallTreeNode], float]]:
    """(path from the root, self seconds) for every node with self time, in pre-order. The
    path list is reused from one item to the next: copy it to keep it."""
    path: list[CallTreeNode] = []
    for node, depth in iter_nodes(tree):
        del path[depth:]
        path.append(node)
        if node.self_time > 0:
            yield path, node.self_time


def folded_stacks(tree: CallTreeNode) -> str:
    """The tree in the collapsed-stack format: one line per node with self time, frames
    from the root joined by `;`, the value in whole microseconds (lines rounding to 0 are
    left out). Semicolons in names become `:` (the format has no escape)."""
    lines = []
    for path, seconds in self_time_stacks(tree):
        micros = round(seconds * 1e6)
        if micros:
            frames = ";".join(frame_label(n).replace(";", ":") for n in path)
            lines.append(f"{frames} {micros}")
    return "\n".join(lines) + ("\n" if lines else "")


class _Dictionary:
    """The shared tables of a ProfilesData, each with its required zero value first."""

    def __init__(self) -> None:
        self.message = otlp.ProfilesDictionary()
        self.message.string_table.append("")
        self.message.function_table.add()
        self.message.location_table.add()
        self.message.mapping_table.add()
        self.message.link_table.add()
        self.message.stack_table.add()
        self.message.attribute_table.add()
        self._strings: dict[str, int] = {"": 0}
        self._locations: dict[tuple[str, str, int], int] = {}
        self._stacks: dict[tuple[int, ...], int] = {}

    def string(self, value: str) -> int:
        index = self._strings.get(value)
        if index is None:
            index = self._strings[value] = len(self.message.string_table)
            self.message.string_table.append(value)
        return index

    def location(self, node: CallTreeNode) -> int:
        """One function and one location per (function, file, line)."""
        index = self._locations.get(node.key)
        if index is None:
            self.message.function_table.add(
                name_strindex=self.string(node.function or "?"),
                filename_strindex=self.string(node.file or ""),
                start_line=max(node.line, 0),
            )
            location = self.message.location_table.add()
            location.lines.add(
                function_index=len(self.message.function_table) - 1, line=max(node.line, 0)
            )
            index = self._locations[node.key] = len(self.message.location_table) - 1
        return index

    def stack(self, path: list[CallTreeNode]) -> int:
        """The stack of `path` (root first), stored leaf first as the schema wants."""
        locations = tuple(self.location(n) for n in reversed(path))
        index = self._stacks.get(locations)
        if index is None:
            self.message.stack_table.add(location_indices=locations)
            index = self._stacks[locations] = len(self.message.stack_table) - 1
        return index

    def link(self, trace_id: str, span_id: str) -> int:
        self.message.link_table.add(
            trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(span_id)
        )
        return len(self.message.link_table) - 1


def otlp_profiles(
    tree: CallTreeNode,
    *,
    trace_id: str,
    span_id: str,
    start_unix_nano: int,
    duration_nano: int,
    resource: dict[str, str] | None = None,
    interval_seconds: float | None = None,
) -> otlp.ProfilesData:
    """The tree as one OTLP Profile of wall time (`wall`, nanoseconds): one sample per
    node with self time, valued at that self time, linked to the span (`trace_id`,
    `span_id` as lowercase hex). `resource`: the span's resource attributes (e.g.
    `service.name`); `interval_seconds`: the sampling interval, as the profile's period."""
    dictionary = _Dictionary()
    link = dictionary.link(trace_id, span_id)
    profile = otlp.Profile(
        sample_type=otlp.ValueType(
            type_strindex=dictionary.string("wall"), unit_strindex=dictionary.string("nanoseconds")
        ),
        time_unix_nano=start_unix_nano,
        duration_nano=duration_nano,
    )
    if interval_seconds:
        profile.period_type.CopyFrom(profile.sample_type)
        profile.period = round(interval_seconds * 1e9)
    for path, seconds in self_time_stacks(tree):
        profile.samples.add(
            stack_index=dictionary.stack(path), link_index=link, values=[round(seconds * 1e9)]
        )
    data = otlp.ProfilesData(dictionary=dictionary.message)
    resource_profiles = data.resource_profiles.add(
        resource=Resource(
            attributes=[
                KeyValue(key=k, value=AnyValue(string_value=str(v)))
                for k, v in (resource or {}).items()
            ]
        )
    )
    scope = resource_profiles.scope_profiles.add(scope=InstrumentationScope(name=SCOPE_NAME))
    scope.profiles.append(profile)
    return data


def otlp_json(data: otlp.ProfilesData) -> str:
    """`data` in the OTLP JSON encoding: protobuf's JSON mapping (lowerCamelCase names,
    int64 as strings) except that trace and span ids are hex, not base64, as OTLP says."""
    document = MessageToDict(data)
    for link in document.get("dictionary", {}).get("linkTable", []):
        for field in ("traceId", "spanId"):
            if field in link:
                link[field] = base64.b64decode(link[field]).hex()
    return json.dumps(document)


def speedscope_profile(tree: CallTreeNode, *, name: str = "request") -> dict[str, Any]:
    """The tree as a speedscope file (a dict; `json.dumps` it), an "evented" profile: each
    frame opens and closes once per call-tree node, children laid end to end inside their
    parent and the parent's self time after them, so the time-ordered view and the
    left-heavy view both show the tree as recorded. Times in seconds."""
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
