"""Building, pruning and walking call trees (calltree, tree_builder and pruning modules)."""

from __future__ import annotations

import math
import os
import sys
import time

import pytest
from pyinstrument import Profiler

from otel_pyinstrument_processor import calltree
from otel_pyinstrument_processor.calltree import CallTreeNode, copy_tree, flatten, iter_nodes
from otel_pyinstrument_processor.pruning import (
    PruneOptions,
    collapse_library_frames,
    fold_small_frames,
    limit_depth,
    prune,
    remove_profiler_frames,
)
from otel_pyinstrument_processor.tree_builder import (
    StackAggregator,
    build_call_tree,
    tree_from_aggregator,
    tree_from_frame_records,
)

THREAD = "MainThread\x00<thread>\x00140000"
MAIN = "main\x00/app/main.py\x001"
LIB = "/lib/python3.11/"
OPTIONS = PruneOptions(library_prefixes=(LIB,), min_share=0.0)


def frame(function: str, file: str = "/app/main.py", line: int = 10, attrs: str = "") -> str:
    return f"{function}\x00{file}\x00{line}{attrs}"


def node(function: str, file: str, total: float, self_time: float, *children: CallTreeNode):
    return CallTreeNode(function, file, 1, total, self_time, 1, list(children))


def find(tree: CallTreeNode, function: str) -> CallTreeNode:
    return next(n for n, _ in iter_nodes(tree) if n.function == function)


def assert_consistent(tree: CallTreeNode) -> None:
    for n, _ in iter_nodes(tree):
        children_total = sum(c.total_time for c in n.children)
        assert math.isclose(n.total_time, n.self_time + children_total, abs_tol=1e-9), n
        assert n.self_time >= -1e-12


def test_build_aggregates_frame_records_with_exact_counts() -> None:
    f, g, h = frame("f", line=10), frame("g", line=20), frame("h", line=30)
    records = [
        ([THREAD, MAIN, f, g], 0.001),
        ([THREAD, MAIN, f, g], 0.001),
        ([THREAD, MAIN, f], 0.002),
        ([THREAD, MAIN, h], 0.004),
        ([THREAD, MAIN, f, g], 0.001),
    ]
    tree = tree_from_frame_records(records, start_call_stack=[THREAD, MAIN])
    assert tree is not None
    assert (tree.function, tree.file, tree.line) == ("main", "/app/main.py", 1)
    assert tree.sample_count == 5 and math.isclose(tree.total_time, 0.009)
    assert [c.function for c in tree.children] == ["f", "h"]  # order of first sample
    f_node = tree.children[0]
    assert (f_node.line, f_node.sample_count) == (10, 4)
    assert math.isclose(f_node.total_time, 0.005) and math.isclose(f_node.self_time, 0.002)
    assert f_node.children[0].sample_count == 3
    assert math.isclose(f_node.children[0].self_time, 0.003)
    assert_consistent(tree)


def test_build_names_methods_after_the_dominant_class_and_ignores_line_attributes() -> None:
    method_a = frame("run", attrs="\x01cWorker\x01l12")
    method_b = frame("run", attrs="\x01cWorker\x01l14")
    method_c = frame("run", attrs="\x01cBase\x01l15")
    records = [([THREAD, MAIN, m], 0.001) for m in (method_a, method_b, method_c)]
    tree = tree_from_frame_records(records, start_call_stack=[THREAD, MAIN])
    assert tree is not None
    assert len(tree.children) == 1
    assert tree.children[0].function == "Worker.run"
    assert tree.children[0].sample_count == 3


def test_stem_is_trimmed_only_along_the_start_stack() -> None:
    outer, inner = frame("serve"), frame("handle")
    records = [([THREAD, outer, MAIN, inner], 0.001)]
    # The profiler started in `serve`: the root stops there, not at the single-child `main`.
    tree = tree_from_frame_records(records, start_call_stack=[THREAD, outer])
    assert tree is not None and tree.function == "serve"
    # With no start stack nothing is trimmed but the synthetic root.
    untrimmed = tree_from_frame_records(records)
    assert untrimmed is not None and untrimmed.function == "MainThread"


def test_empty_records_give_no_tree() -> None:
    assert tree_from_frame_records([]) is None


def test_build_from_a_real_pyinstrument_session() -> None:
    def spin_for_calltree_test() -> None:
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:
            pass

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    spin_for_calltree_test()
    session = profiler.stop()
    tree = build_call_tree(session)
    assert tree is not None
    assert tree.function == "test_build_from_a_real_pyinstrument_session"
    assert tree.sample_count == len(session.frame_records)
    spin = find(tree, "spin_for_calltree_test")
    assert spin.file == __file__
    assert spin.total_time >= 0.5 * tree.total_time
    assert_consistent(tree)


def test_remove_profiler_frames_charges_plumbing_to_the_caller() -> None:
    otel = f"{os.sep}site{os.sep}opentelemetry{os.sep}sdk{os.sep}trace{os.sep}__init__.py"
    ours = os.path.join(os.path.dirname(calltree.__file__), "processor.py")
    start_span = node(
        "start_span", otel, 0.002, 0.0, node("on_start", ours, 0.002, 0.002)
    )  # leads only into the processor: plumbing
    view = node("view", "/app/views.py", 0.01, 0.01)
    middleware = node("__call__", otel, 0.012, 0.0, start_span, view)
    tree = node("handler", "/app/main.py", 0.013, 0.001, middleware)
    tree = remove_profiler_frames(tree, PruneOptions())
    assert [n.function for n, _ in iter_nodes(tree)] == ["handler", "__call__", "view"]
    assert math.isclose(find(tree, "__call__").self_time, 0.002)
    assert math.isclose(tree.total_time, 0.013)
    assert_consistent(tree)


def test_collapse_library_frames_keeps_entry_exit_and_leaf_frames() -> None:
    app_callback = node("callback", "/app/cb.py", 0.004, 0.004)
    exit_frame = node("dispatch", LIB + "d.py", 0.004, 0.0, app_callback)
    leaf = node("recv", "<built-in>", 0.003, 0.003)
    inner = node("inner", LIB + "i.py", 0.008, 0.001, exit_frame, leaf)
    entry = node("entry", LIB + "e.py", 0.008, 0.0, inner)
    tree = node("view", "/app/v.py", 0.01, 0.002, entry)
    tree = collapse_library_frames(tree, OPTIONS)
    shape = [(n.function, d) for n, d in iter_nodes(tree)]
    assert shape == [("view", 0), ("entry", 1), ("dispatch", 2), ("callback", 3), ("recv", 2)]
    assert math.isclose(find(tree, "entry").self_time, 0.001)  # `inner`'s self time
    assert_consistent(tree)


def test_collapse_merges_library_paths_that_meet_again() -> None:
    leaf_a = node("write", LIB + "io.py", 0.002, 0.002)
    leaf_b = node("write", LIB + "io.py", 0.003, 0.003)
    mid_a = node("a", LIB + "a.py", 0.002, 0.0, leaf_a)
    mid_b = node("b", LIB + "b.py", 0.003, 0.0, leaf_b)
    entry = node("entry", LIB + "e.py", 0.005, 0.0, mid_a, mid_b)
    tree = collapse_library_frames(node("view", "/app/v.py", 0.005, 0.0, entry), OPTIONS)
    write = find(tree, "write")
    assert [c.function for c in find(tree, "entry").children] == ["write"]
    assert math.isclose(write.total_time, 0.005) and write.sample_count == 2


def test_collapse_keeps_a_library_frame_with_large_self_time() -> None:
    hot = node("hot", LIB + "h.py", 0.008, 0.006, node("leaf", LIB + "l.py", 0.002, 0.002))
    tree = node("view", "/app/v.py", 0.01, 0.0, node("entry", LIB + "e.py", 0.01, 0.002, hot))
    tree = collapse_library_frames(tree, OPTIONS)
    assert [n.function for n, _ in iter_nodes(tree)] == ["view", "entry", "hot", "leaf"]


def test_fold_small_frames_moves_time_to_the_parent() -> None:
    tiny = node("tiny", "/app/t.py", 0.0004, 0.0004)
    big = node("big", "/app/b.py", 0.0096, 0.0096)
    options = PruneOptions(min_share=0.05)
    tree = fold_small_frames(node("root", "/app/r.py", 0.01, 0.0, tiny, big), options)
    assert [c.function for c in tree.children] == ["big"]
    assert math.isclose(tree.self_time, 0.0004) and math.isclose(tree.total_time, 0.01)


def test_limit_depth_cuts_and_keeps_totals() -> None:
    chain = node("d3", "/app/x.py", 0.001, 0.001)
    for depth in (2, 1, 0):
        chain = node(f"d{depth}", "/app/x.py", 0.001, 0.0, chain)
    tree = limit_depth(chain, PruneOptions(max_depth=1))
    assert [(n.function, d) for n, d in iter_nodes(tree)] == [("d0", 0), ("d1", 1)]
    assert math.isclose(tree.children[0].self_time, 0.001)


def test_flatten_gives_the_function_calls_rows() -> None:
    tree = node(
        "root",
        "/app/r.py",
        0.01,
        0.0,
        node("a", "/app/a.py", 0.006, 0.002, node("a1", "/app/a.py", 0.004, 0.004)),
        node("b", "/app/b.py", 0.004, 0.004),
    )
    rows = flatten(tree)
    assert rows[0] == {
        "call_id": "0",
        "parent_call_id": None,
        "depth": 0,
        "call_order": 0,
        "duration": 0.01,
        "function_name": "root",
        "file_path": "/app/r.py",
        "line_number": 1,
    }
    summary = [(r["call_id"], r["parent_call_id"], r["depth"], r["call_order"]) for r in rows]
    assert summary == [("0", None, 0, 0), ("1", "0", 1, 0), ("2", "1", 2, 0), ("3", "0", 1, 1)]
    assert [r["function_name"] for r in rows] == ["root", "a", "a1", "b"]


def test_steps_handle_stacks_deeper_than_the_recursion_limit() -> None:
    depth = sys.getrecursionlimit() * 3
    records = [([THREAD, *(frame(f"f{i}", line=i) for i in range(depth))], 0.001)]
    tree = tree_from_frame_records(records)
    assert tree is not None
    copied = prune(copy_tree(tree), PruneOptions(library_prefixes=(LIB,)))
    assert sum(1 for _ in iter_nodes(copied)) == depth + 1
    assert len(flatten(copied)) == depth + 1


@pytest.mark.parametrize("min_share", [0.0, 0.005, 0.2])
def test_default_pipeline_preserves_total_time(min_share: float) -> None:
    records = [
        ([THREAD, MAIN, frame("f"), frame("json", LIB + "json.py"), frame("enc", LIB + "e.py")], t)
        for t in (0.001, 0.0001, 0.003)
    ] + [([THREAD, MAIN, frame("g", line=99)], 0.00001)]
    tree = tree_from_frame_records(records, [THREAD, MAIN])
    assert tree is not None
    total = tree.total_time
    pruned = prune(tree, PruneOptions(min_share=min_share, library_prefixes=(LIB,)))
    assert math.isclose(pruned.total_time, total)
    assert pruned.sample_count == 4
    assert_consistent(pruned)


def test_build_matches_a_plain_per_path_sum_on_random_stacks() -> None:
    # The builder walks only the part of each stack that changed since the previous
    # sample; every node must still get exactly the time and samples of its paths.
    import random

    rng = random.Random(7)
    frames = [frame(name, line=line) for name in "abcd" for line in (1, 2)]
    records = []
    for _ in range(300):
        depth = rng.randint(0, 6)
        records.append(([THREAD, MAIN, *rng.choices(frames, k=depth)], rng.choice((1, 2, 5))))
    expected_total: dict[tuple[tuple[str, int], ...], float] = {}
    expected_samples: dict[tuple[tuple[str, int], ...], int] = {}
    for stack, elapsed in records:
        path: tuple[tuple[str, int], ...] = ()
        for info in stack[1:]:
            name, _file, line = info.split("\x00")
            path += ((name, int(line)),)
            expected_total[path] = expected_total.get(path, 0) + elapsed
            expected_samples[path] = expected_samples.get(path, 0) + 1
    tree = tree_from_frame_records(records, start_call_stack=[THREAD, MAIN])
    assert tree is not None
    seen = 0
    stack: list[tuple[CallTreeNode, tuple[tuple[str, int], ...]]] = [(tree, (("main", 1),))]
    while stack:
        current, path = stack.pop()
        seen += 1
        assert current.total_time == expected_total[path], path
        assert current.sample_count == expected_samples[path], path
        stack.extend((c, (*path, (c.function, c.line))) for c in current.children)
    assert seen == len(expected_total)
    assert_consistent(tree)


def test_aggregating_in_batches_builds_the_same_tree_as_all_at_once() -> None:
    # The sampling thread aggregates a request's samples as it takes them (sampler mode);
    # the request's thread finishes the tree. Any split of the samples gives the same tree.
    import random

    rng = random.Random(11)
    frames = [
        frame(name, line=line, attrs=f"\x01cKlass{line}") for name in "abc" for line in (1, 2)
    ]
    records = [
        ([THREAD, MAIN, *rng.choices(frames, k=rng.randint(0, 5))], rng.choice((0.01, 0.02)))
        for _ in range(60)
    ]
    whole = tree_from_frame_records(records, [THREAD, MAIN], 0.02)
    assert whole is not None
    for batch in (1, 2, 7):
        aggregator = StackAggregator()
        for start in range(0, len(records), batch):
            aggregator.add_all(records[start : start + batch])
        built = tree_from_aggregator(aggregator, [THREAD, MAIN], 0.02)
        assert built is not None
        assert flatten(built) == flatten(whole)
        assert [(n.self_time, n.sample_count) for n, _ in iter_nodes(built)] == [
            (n.self_time, n.sample_count) for n, _ in iter_nodes(whole)
        ]
    assert tree_from_aggregator(StackAggregator(), [THREAD, MAIN]) is None
