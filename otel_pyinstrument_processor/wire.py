"""The wire format of a call tree on a span attribute, and its public decoder.

``calltree/1;json+zlib+base64``: a compact JSON document (string table + nodes as arrays in
pre-order), zlib-compressed, base64-encoded because OpenTelemetry attribute values cannot be
bytes. Layout, versioning rules and the size cap are documented in docs/wire-format.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib
from typing import Any, NamedTuple

from otel_pyinstrument_processor.calltree import CallTreeNode, copy_tree
from otel_pyinstrument_processor.pruning import PruneOptions, fold_small_frames, limit_depth

WIRE_VERSION = 1
"""Version of the payload layout; also the ``v`` field inside the payload."""

PROFILE_FORMAT_V1 = "calltree/1;json+zlib+base64"
"""The value of the ``pystrument.profile.format`` attribute for this version."""

DEFAULT_MAX_BYTES = 64 * 1024
"""Default cap on the encoded text (base64 characters, i.e. bytes on the wire)."""

MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024
"""The decoder refuses payloads that inflate beyond this (decompression-bomb guard)."""

MAX_ENCODED_CHARS = MAX_DECOMPRESSED_BYTES
"""The decoder refuses encoded text longer than this without decoding it."""

_FORMAT_RE = re.compile(r"calltree/(\d+);json\+zlib\+base64")
_ZLIB_LEVEL = 6  # level 9 is ~2x slower for <1 % smaller output on these payloads
# Below this much JSON the zlib stream stores the bytes (level 0): compressing costs 10-15 µs
# whatever the size (stream setup, measured on the 2-core VM), to save 150-400 bytes on a
# tree of a few nodes (a sampled request's usual 1-5 samples).
_STORED_BELOW = 1024
_ZLIB_WBITS = 12
_ZLIB_MEM_LEVEL = 5
# The JSON string literal of a str (ensure_ascii=False), from the stdlib's C encoder.
_json_string = json.encoder.encode_basestring
_NODE_FIELDS = 7  # function, file, line, total_us, self_us, sample_count, child_count

# Each rung is tried in turn when a profile is over the cap: (min_share, max_depth).
_ESCALATION: tuple[tuple[float, int | None], ...] = (
    (0.01, None),
    (0.02, 128),
    (0.05, 64),
    (0.1, 32),
    (0.1, 16),
    (0.2, 8),
)


class ProfileDecodeError(ValueError):
    """The attribute value is not a call tree this version of the decoder understands."""


class ProfileTooLargeError(ValueError):
    """Even the hardest pruning does not bring the tree under the size cap."""


class EncodedProfile(NamedTuple):
    """An encoded call tree, ready for the span attributes."""

    tree: str
    """The value for ``pystrument.profile.tree``."""
    format: str
    """The value for ``pystrument.profile.format``."""
    truncated: bool
    """True when the tree was pruned further than asked to fit the size cap."""


def encode_profile(tree: CallTreeNode, *, max_bytes: int = DEFAULT_MAX_BYTES) -> EncodedProfile:
    """Encode ``tree`` as text of at most ``max_bytes`` characters.

    When the full tree is too large, a copy is pruned harder (higher min-share, then a depth
    limit) until it fits and ``truncated`` is set; the original tree is not modified. Raises
    :class:`ProfileTooLargeError` if even the hardest pruning does not fit.
    """
    raw = payload_json(tree)
    text = compress_payload(raw)
    if len(text) <= max_bytes:
        return EncodedProfile(text, PROFILE_FORMAT_V1, False)
    ratio = len(text) / len(raw)
    work = copy_tree(tree)
    # Folding and depth limits are monotone, so each rung can start from the previous one.
    for min_share, max_depth in _ESCALATION:
        options = PruneOptions(min_share=min_share, max_depth=max_depth)
        work = limit_depth(fold_small_frames(work, options), options)
        raw = payload_json(work)
        if len(raw) * ratio > max_bytes * 1.5:
            continue  # compressing is the expensive part: skip rungs that clearly won't fit
        text = compress_payload(raw)
        if len(text) <= max_bytes:
            return EncodedProfile(text, PROFILE_FORMAT_V1, True)
    raise ProfileTooLargeError(
        f"call tree does not fit in {max_bytes} bytes even after maximal pruning "
        f"({len(raw)} bytes of JSON left)"
    )


def to_payload(tree: CallTreeNode) -> dict[str, Any]:
    """The JSON document (before compression) for ``tree``; see docs/wire-format.md."""
    payload: dict[str, Any] = json.loads(payload_json(tree))
    return payload


def _safe_text(value: str) -> str:
    # Lone surrogates (undecodable file names) would make the UTF-8 step fail and are
    # invalid in BSON downstream: keep them as visible escapes instead.
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def string_literal(value: str) -> str:
    """``value`` as the payload's string table writes it (a JSON string literal)."""
    # Function names and files recur in every tree of a process: each is written once.
    literal = _LITERALS.get(value)
    if literal is None:
        if len(_LITERALS) >= _MAX_CACHED_LITERALS:
            _LITERALS.clear()
        literal = _LITERALS[value] = _json_string(_safe_text(value))
    return literal


_MAX_CACHED_LITERALS = 50_000
_LITERALS: dict[str, str] = {}


def payload_bytes(strings: list[str], nodes: list[str]) -> bytes:
    """The payload JSON of a string table (JSON literals) and nodes (JSON arrays), in
    pre-order."""
    return (
        f'{{"v":{WIRE_VERSION},"strings":[{",".join(strings)}],"nodes":[{",".join(nodes)}]}}'
    ).encode()


def payload_json(tree: CallTreeNode) -> bytes:
    """The uncompressed JSON bytes of the payload: ``{"v", "strings", "nodes"}``, compact
    (``json.dumps(payload, separators=(",", ":"), ensure_ascii=False)``'s bytes)."""
    # Written out in one walk rather than through a payload dict and JSONEncoder (this is
    # on the request's thread for every tree): the strings by the stdlib's JSON string
    # encoder, each node (integers only) by an f-string. Pre-order, children in order.
    strings: list[str] = []
    index: dict[str, int] = {}
    nodes: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        name = node.function
        function = index.get(name)
        if function is None:
            function = index[name] = len(strings)
            strings.append(string_literal(name))
        name = node.file
        file = index.get(name)
        if file is None:
            file = index[name] = len(strings)
            strings.append(string_literal(name))
        children = node.children
        total = round(node.total_time * 1_000_000)
        own = round(node.self_time * 1_000_000)
        nodes.append(
            f"[{function},{file},{node.line},{total if total > 0 else 0},"
            f"{own if own > 0 else 0},{node.sample_count},{len(children)}]"
        )
        if children:
            stack.extend(reversed(children))
    return payload_bytes(strings, nodes)


def compress_payload(raw: bytes) -> str:
    """The attribute text of the payload JSON ``raw``: zlib (stored when small), base64."""
    # A 4 KiB window and memLevel 5 instead of zlib's 32 KiB / 8: the default state is
    # ~270 KB, allocated (and page-faulted) afresh for every profile, which cost more than
    # compressing a few KB of JSON. Any inflater reads the smaller window (it is in the zlib
    # header), so the format is unchanged.
    if len(raw) < _STORED_BELOW:
        return base64.b64encode(stored_zlib(raw)).decode("ascii")
    compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, _ZLIB_WBITS, _ZLIB_MEM_LEVEL)
    return base64.b64encode(compressor.compress(raw) + compressor.flush()).decode("ascii")


# The zlib header zlib writes for a 4 KiB window at level 0: CMF 0x48 (deflate, window
# 2^12), FLG 0x0d (level "fastest", no dictionary, check bits).
_STORED_HEADER = b"\x48\x0d"
_MAX_STORED = 0xFFFF  # one stored deflate block holds at most this many bytes


def stored_zlib(raw: bytes) -> bytes:
    """The zlib stream ``zlib.compressobj(0, DEFLATED, 12, 5)`` writes for ``raw`` (shorter
    than 64 KiB): the header, one final stored block, the Adler-32 of ``raw``.

    Byte for byte zlib's own output (tests/unit/test_wire.py), written without a zlib stream:
    making one allocates and clears its ~30 KB of state, which cost a sampled request
    30-50 µs on the 2-core VM, far more than the copy (the trees of sampled requests are
    mostly under 1 KiB of JSON, stored, not compressed)."""
    size = len(raw)
    if size > _MAX_STORED:
        raise ValueError(f"a stored block holds at most {_MAX_STORED} bytes, got {size}")
    return b"".join(
        (
            _STORED_HEADER,
            b"\x01",  # BFINAL=1, BTYPE=00 (stored)
            struct.pack("<HH", size, size ^ 0xFFFF),
            raw,
            struct.pack(">I", zlib.adler32(raw)),
        )
    )


def decode_profile(encoded: str, format: str | None = None) -> CallTreeNode:
    """Decode a ``pystrument.profile.tree`` value back into a :class:`CallTreeNode`.

    ``format`` is the ``pystrument.profile.format`` value if the span had one; it is checked
    against the versions this decoder knows. Any problem with the input (not base64, not
    zlib, too large when inflated, not JSON, unknown version, malformed node) raises
    :class:`ProfileDecodeError` and nothing else.
    """
    try:
        return _decode(encoded, format)
    except ProfileDecodeError:
        raise
    except Exception as exc:  # a decoder bug must still look like bad input to callers
        raise ProfileDecodeError(f"undecodable call tree: {type(exc).__name__}: {exc}") from exc


def _decode(encoded: object, fmt: object) -> CallTreeNode:
    version = _check_format(fmt)
    if not isinstance(encoded, str):
        raise ProfileDecodeError(f"call tree must be a str, got {type(encoded).__name__}")
    if len(encoded) > MAX_ENCODED_CHARS:
        raise ProfileDecodeError(f"call tree text is longer than {MAX_ENCODED_CHARS} characters")
    try:
        compressed = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ProfileDecodeError(f"call tree is not valid base64: {exc}") from exc
    raw = _inflate(compressed)
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProfileDecodeError(f"call tree payload is not UTF-8 JSON: {exc}") from exc
    return _tree_from_payload(payload, version)


def _check_format(fmt: object) -> int | None:
    if fmt is None:
        return None
    match = _FORMAT_RE.fullmatch(fmt) if isinstance(fmt, str) else None
    if match is None:
        raise ProfileDecodeError(f"unknown call tree format {fmt!r}")
    version = int(match.group(1))
    if version != WIRE_VERSION:
        raise ProfileDecodeError(
            f"unsupported call tree version {version} (this decoder reads {WIRE_VERSION})"
        )
    return version


def _inflate(compressed: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, MAX_DECOMPRESSED_BYTES)
    except zlib.error as exc:
        raise ProfileDecodeError(f"call tree is not valid zlib data: {exc}") from exc
    if inflater.unconsumed_tail:
        raise ProfileDecodeError(
            f"call tree inflates beyond {MAX_DECOMPRESSED_BYTES} bytes; refusing to decode"
        )
    if not inflater.eof:
        raise ProfileDecodeError("call tree zlib stream is truncated")
    if inflater.unused_data:
        raise ProfileDecodeError("call tree has trailing bytes after the zlib stream")
    return raw


def _tree_from_payload(payload: object, format_version: int | None) -> CallTreeNode:
    if not isinstance(payload, dict):
        raise ProfileDecodeError("call tree payload must be a JSON object")
    version = payload.get("v")
    if not _is_int(version):
        raise ProfileDecodeError("call tree payload has no integer version field 'v'")
    if version != WIRE_VERSION:
        raise ProfileDecodeError(
            f"unsupported call tree version {version} (this decoder reads {WIRE_VERSION})"
        )
    if format_version is not None and format_version != version:
        raise ProfileDecodeError("call tree format attribute and payload version disagree")
    strings = payload.get("strings")
    nodes = payload.get("nodes")
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise ProfileDecodeError("call tree payload 'strings' must be a list of strings")
    try:
        "".join(strings).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProfileDecodeError("call tree string table is not valid Unicode") from exc
    if not isinstance(nodes, list) or not nodes:
        raise ProfileDecodeError("call tree payload 'nodes' must be a non-empty list")

    root: CallTreeNode | None = None
    open_parents: list[list[Any]] = []  # [node, children still to come]
    for position, raw in enumerate(nodes):
        node, child_count = _node_from_array(raw, strings, position)
        if root is None:
            root = node
        elif not open_parents:
            raise ProfileDecodeError(f"node {position} is outside the root's subtree")
        else:
            parent = open_parents[-1]
            parent[0].children.append(node)
            parent[1] -= 1
            if parent[1] == 0:
                open_parents.pop()
        if child_count:
            open_parents.append([node, child_count])
    if open_parents or root is None:
        raise ProfileDecodeError("call tree ends before every node's children were listed")
    return root


def _node_from_array(raw: object, strings: list[str], position: int) -> tuple[CallTreeNode, int]:
    # Later minor revisions may append fields to a node: extra trailing elements are ignored.
    if not isinstance(raw, list) or len(raw) < _NODE_FIELDS:
        raise ProfileDecodeError(f"node {position} must be an array of {_NODE_FIELDS} fields")
    fields = raw[:_NODE_FIELDS]
    if not all(_is_int(value) and value >= 0 for value in fields):
        raise ProfileDecodeError(f"node {position} fields must be non-negative integers")
    function, file, line, total_us, self_us, samples, child_count = fields
    if function >= len(strings) or file >= len(strings):
        raise ProfileDecodeError(f"node {position} refers to a string index out of range")
    node = CallTreeNode(
        function=strings[function],
        file=strings[file],
        line=line,
        total_time=total_us / 1_000_000,
        self_time=self_us / 1_000_000,
        sample_count=samples,
    )
    return node, child_count


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
