"""The call-tree wire format: round trip, size cap, and refusing bad input."""

from __future__ import annotations

import base64
import json
import math
import random
import zlib

import pytest

from otel_pyinstrument_processor import (
    PROFILE_FORMAT_V1,
    CallTreeNode,
    ProfileDecodeError,
    ProfileTooLargeError,
    decode_profile,
    encode_profile,
    iter_nodes,
)
from otel_pyinstrument_processor.calltree import copy_tree
from otel_pyinstrument_processor.wire import (
    MAX_DECOMPRESSED_BYTES,
    compress_payload,
    payload_json,
    stored_zlib,
    to_payload,
)


def sample_tree() -> CallTreeNode:
    sleep = CallTreeNode("sleep", "<built-in>", 0, 0.040321, 0.040321, 1)
    spin = CallTreeNode("compute_stats", "/srv/app/reports.py", 88, 0.061234, 0.051234, 58)
    spin.children.append(CallTreeNode("perf_counter", "<built-in>", 0, 0.01, 0.01, 10))
    handler = CallTreeNode("Reports.sales", "/srv/app/reports.py", 12, 0.101555, 0.0, 59)
    handler.children += [spin, sleep]
    return CallTreeNode(
        "wsgi_app", "/venv/site-packages/flask/app.py", 1500, 0.102, 0.000445, 60, [handler]
    )


def encode(payload: object) -> str:
    """Text the way the encoder would write it, for hand-made payloads."""
    raw = json.dumps(payload).encode()
    return base64.b64encode(zlib.compress(raw)).decode()


def assert_same_tree(decoded: CallTreeNode, original: CallTreeNode) -> None:
    pairs = list(zip(iter_nodes(decoded), iter_nodes(original), strict=True))
    for (got, got_depth), (want, want_depth) in pairs:
        assert got_depth == want_depth
        assert (got.function, got.file, got.line) == (want.function, want.file, want.line)
        assert got.sample_count == want.sample_count
        assert len(got.children) == len(want.children)
        assert math.isclose(got.total_time, want.total_time, abs_tol=1e-6)
        assert math.isclose(got.self_time, want.self_time, abs_tol=1e-6)


def test_round_trip_keeps_every_field() -> None:
    tree = sample_tree()
    encoded = encode_profile(tree)
    assert encoded.format == PROFILE_FORMAT_V1 == "calltree/1;json+zlib+base64"
    assert encoded.truncated is False
    assert encoded.tree.isascii()
    assert_same_tree(decode_profile(encoded.tree, encoded.format), tree)
    assert_same_tree(decode_profile(encoded.tree), tree)  # format attribute is optional


def test_payload_layout_is_the_documented_one() -> None:
    payload = to_payload(sample_tree())
    assert payload["v"] == 1
    assert payload["strings"][:4] == [
        "wsgi_app",
        "/venv/site-packages/flask/app.py",
        "Reports.sales",
        "/srv/app/reports.py",
    ]
    # [function, file, line, total_us, self_us, sample_count, child_count], pre-order
    assert payload["nodes"] == [
        [0, 1, 1500, 102000, 445, 60, 1],
        [2, 3, 12, 101555, 0, 59, 2],
        [4, 3, 88, 61234, 51234, 58, 1],
        [5, 6, 0, 10000, 10000, 10, 0],
        [7, 6, 0, 40321, 40321, 1, 0],
    ]


DOCUMENTED_EXAMPLE = (  # docs/wire-format.md: the encoding of sample_tree()
    "eJxFjs1qwzAQhN9F5030Yyl1Q+lD5GqMUd2NEXFkoZUdSum7d+UGepll5psR+habOGsQVHKIE4lzJx40hcGnJEDID"
    "eMmKRQ8JD/e/IQkr7Onm2R+TF9cuWBacqEj+RmpTihvlcr8BHtrXO5pLThQ8aW2EubrMC5rLJjZvn2sYS6HEN/Z0I"
    "yYRA8iLp9Yf9Qp0KCd4qOM4mOtgxO7HjoDDWjDQDvnQIF7BcOx5bht4aRNY8H9absPeAn1IaX+FRSDlx1Y1Rj9VM1"
    "5//MLjU9StQ=="
)


def test_documented_example_decodes_to_the_documented_tree() -> None:
    assert_same_tree(decode_profile(DOCUMENTED_EXAMPLE, PROFILE_FORMAT_V1), sample_tree())


def test_strings_are_stored_once_and_compression_pays() -> None:
    children = [
        CallTreeNode(f"handler_{i}", "/srv/app/a/very/long/path/to/views.py", i, 0.001, 0.001, 1)
        for i in range(300)
    ]
    tree = CallTreeNode("root", "/srv/app/main.py", 1, 0.3, 0.0, 300, children)
    assert to_payload(tree)["strings"].count("/srv/app/a/very/long/path/to/views.py") == 1
    assert len(encode_profile(tree).tree) < len(payload_json(tree)) / 2


def test_unicode_and_undecodable_file_names_survive() -> None:
    tree = CallTreeNode("größe_berechnen", "/srv/app/\udcff-bad.py", 3, 0.01, 0.01, 10)
    decoded = decode_profile(encode_profile(tree).tree)
    assert decoded.function == "größe_berechnen"
    assert decoded.file == "/srv/app/\\udcff-bad.py"  # a visible escape, valid UTF-8
    decoded.file.encode("utf-8")


def big_tree(seed: int = 1) -> CallTreeNode:
    """~12k nodes with random names (incompressible), 10 wide at the top, chains below."""
    rng = random.Random(seed)

    def name() -> str:
        return f"f_{rng.getrandbits(160):040x}"

    root = CallTreeNode("root", "/srv/app/main.py", 1, 10.0, 0.0, 10_000)
    for _ in range(10):
        top = CallTreeNode(name(), f"/srv/app/{name()}.py", 1, 1.0, 0.0, 1000)
        root.children.append(top)
        parent = top
        for depth in range(1, 1200):
            child = CallTreeNode(name(), f"/srv/app/{name()}.py", depth, 1.0, 0.0, 1000)
            parent.children.append(child)
            parent = child
        parent.self_time = 1.0
    return root


def test_oversize_tree_is_pruned_to_fit_and_flagged() -> None:
    tree = big_tree()
    before = len(list(iter_nodes(tree)))
    encoded = encode_profile(tree, max_bytes=64 * 1024)
    assert encoded.truncated is True
    assert len(encoded.tree) <= 64 * 1024
    decoded = decode_profile(encoded.tree, encoded.format)
    assert math.isclose(decoded.total_time, 10.0)
    assert 1 < len(list(iter_nodes(decoded))) < before
    assert len(list(iter_nodes(tree))) == before  # the caller's tree is untouched


def test_impossible_cap_fails_cleanly() -> None:
    with pytest.raises(ProfileTooLargeError, match="does not fit in 40 bytes"):
        encode_profile(big_tree(), max_bytes=40)


def bomb() -> str:
    return base64.b64encode(zlib.compress(b"[" + b" " * (MAX_DECOMPRESSED_BYTES + 10), 9)).decode()


GOOD_NODE = [0, 1, 3, 100, 100, 1, 0]
UNDECODABLE = {
    "empty": "",
    "garbage": "this is not a profile!",
    "bad base64 padding": "abcde",
    "base64 of garbage": base64.b64encode(b"\x00\x01garbage bytes").decode(),
    "truncated zlib": encode({"v": 1, "strings": ["f", "x.py"], "nodes": [GOOD_NODE]})[:-8],
    "trailing bytes": base64.b64encode(
        zlib.compress(b'{"v":1,"strings":["f","x.py"],"nodes":[[0,1,3,100,100,1,0]]}') + b"xx"
    ).decode(),
    "not utf-8": base64.b64encode(zlib.compress(b"\xff\xfe")).decode(),
    "not json": base64.b64encode(zlib.compress(b"{nope")).decode(),
    "json list": encode([1, 2, 3]),
    "no version": encode({"strings": ["f", "x.py"], "nodes": [GOOD_NODE]}),
    "unknown version": encode({"v": 2, "strings": ["f", "x.py"], "nodes": [GOOD_NODE]}),
    "bool version": encode({"v": True, "strings": ["f", "x.py"], "nodes": [GOOD_NODE]}),
    "strings not list": encode({"v": 1, "strings": "fx", "nodes": [GOOD_NODE]}),
    "no nodes": encode({"v": 1, "strings": ["f", "x.py"], "nodes": []}),
    "short node": encode({"v": 1, "strings": ["f", "x.py"], "nodes": [[0, 1, 3]]}),
    "node not array": encode({"v": 1, "strings": ["f", "x.py"], "nodes": [{"f": 0}]}),
    "string index out of range": encode({"v": 1, "strings": ["f"], "nodes": [GOOD_NODE]}),
    "negative time": encode({"v": 1, "strings": ["f", "x.py"], "nodes": [[0, 1, 3, -5, 0, 1, 0]]}),
    "float field": encode({"v": 1, "strings": ["f", "x.py"], "nodes": [[0, 1, 3.5, 1, 1, 1, 0]]}),
    "missing children": encode(
        {"v": 1, "strings": ["f", "x.py"], "nodes": [[0, 1, 3, 1, 1, 1, 2]]}
    ),
    "two roots": encode({"v": 1, "strings": ["f", "x.py"], "nodes": [GOOD_NODE, GOOD_NODE]}),
    "lone surrogate string": encode({"v": 1, "strings": ["\udc80", "x.py"], "nodes": [GOOD_NODE]}),
    "deeply nested json": base64.b64encode(zlib.compress(b"[" * 200_000)).decode(),
    "zlib bomb": bomb(),
}


@pytest.mark.parametrize("text", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_undecodable_values_raise_profile_decode_error(text: str) -> None:
    with pytest.raises(ProfileDecodeError):
        decode_profile(text)


@pytest.mark.parametrize("value", [None, b"eJw=", 42])
def test_non_text_values_raise_profile_decode_error(value: object) -> None:
    with pytest.raises(ProfileDecodeError, match="must be a str"):
        decode_profile(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fmt", ["calltree/2;json+zlib+base64", "calltree/1;json+gzip+base64", "", "pprof"]
)
def test_unknown_formats_are_refused(fmt: str) -> None:
    with pytest.raises(ProfileDecodeError):
        decode_profile(encode_profile(sample_tree()).tree, fmt)


def test_decode_error_is_a_value_error_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="inflates beyond"):
        decode_profile(UNDECODABLE["zlib bomb"])
    with pytest.raises(ValueError, match="unsupported call tree version 2"):
        decode_profile(UNDECODABLE["unknown version"])


def test_extra_trailing_node_fields_are_ignored() -> None:
    text = encode({"v": 1, "strings": ["f", "x.py"], "nodes": [[*GOOD_NODE, "future"]], "x": 1})
    assert decode_profile(text).function == "f"


def test_deep_chain_round_trips_without_recursion() -> None:
    root = leaf = CallTreeNode("f0", "/app/x.py", 0, 1.0, 0.0, 1)
    for i in range(1, 20_000):
        child = CallTreeNode(f"f{i % 7}", "/app/x.py", i, 1.0, 0.0, 1)
        leaf.children.append(child)
        leaf = child
    leaf.self_time = 1.0
    encoded = encode_profile(root, max_bytes=10 * 1024 * 1024)
    assert not encoded.truncated
    assert sum(1 for _ in iter_nodes(decode_profile(encoded.tree))) == 20_000
    assert sum(1 for _ in iter_nodes(copy_tree(root))) == 20_000


def test_payload_json_is_compact_canonical_json() -> None:
    # The same bytes json.dumps writes for the payload, for names JSON must escape too.
    awkward = CallTreeNode('say "hi"\\ \t\x01', "/srv/äpp/\udcff.py", 7, 0.002, -1e-9, 2)
    tree = CallTreeNode("root", "/srv/app/main.py", 1, 0.0025, 0.0005, 3, [awkward])
    raw = payload_json(tree)
    payload = json.loads(raw)
    assert raw == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert payload["strings"][2] == 'say "hi"\\ \t\x01'
    assert payload["nodes"] == [[0, 1, 1, 2500, 500, 3, 1], [2, 3, 7, 2000, 0, 2, 0]]


def test_stored_zlib_is_zlibs_own_stored_stream() -> None:
    # compress_payload writes small payloads' zlib stream itself; it must be the bytes zlib
    # writes at level 0 with the same window and memory level, for every size it is used for.
    rng = random.Random(7)
    for size in [0, 1, 2, 30, 255, 256, 257, 1000, 1023, *rng.sample(range(1024), 40)]:
        raw = bytes(rng.randrange(256) for _ in range(size))
        compressor = zlib.compressobj(0, zlib.DEFLATED, 12, 5)
        assert stored_zlib(raw) == compressor.compress(raw) + compressor.flush(), size
        assert zlib.decompress(stored_zlib(raw)) == raw


def test_small_payloads_are_stored_and_decode() -> None:
    tree = CallTreeNode("handler", "app.py", 1, 0.002, 0.002, 1)
    raw = payload_json(tree)
    assert len(raw) < 1024
    text = compress_payload(raw)
    assert base64.b64decode(text) == stored_zlib(raw)
    assert payload_json(decode_profile(text)) == raw
    with pytest.raises(ValueError, match="at most 65535"):
        stored_zlib(b"x" * 65536)
