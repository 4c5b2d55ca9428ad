"""The one-walk encoder (tree_encoding) against the node path it replaces, byte for byte.

The node path is the reference: CallTreeNodes built with min-share folding, the pruning
steps after the build, then ``encode_profile``. Both run on the same samples: random stacks
from a seeded generator (library and glue frames, profiler frames, methods with class
names, frames that collapse into one, ties at the min-share threshold), deep stacks past
the depth limit, oversize trees, and real pyinstrument samples.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Sequence

import pytest
from pyinstrument import Profiler

import otel_pyinstrument_processor
from otel_pyinstrument_processor.calltree import iter_nodes
from otel_pyinstrument_processor.hook_profile import HookProfile
from otel_pyinstrument_processor.pruning import PruneOptions, prune
from otel_pyinstrument_processor.tree_builder import (
    StackAggregator,
    aggregate_frame_records,
    top_of_tree,
    tree_from_frame_records,
)
from otel_pyinstrument_processor.tree_encoding import (
    STEPS_AFTER_BUILD,
    encode_aggregated,
    encode_single_sample,
    payload_of_builders,
)
from otel_pyinstrument_processor.wire import (
    DEFAULT_MAX_BYTES,
    EncodedProfile,
    ProfileTooLargeError,
    decode_profile,
    encode_profile,
    payload_json,
)

Records = list[tuple[list[str], float]]

THREAD = "MainThread\x00<thread>\x00140000"
MAIN = "main\x00/app/main.py\x001"
LIB = "/lib/python3.11/"
PACKAGE = os.path.dirname(otel_pyinstrument_processor.__file__)
PYINSTRUMENT = os.path.dirname(sys.modules["pyinstrument"].__file__ or "")


def frame(function: str, file: str, line: int = 10, attrs: str = "") -> str:
    return f"{function}\x00{file}\x00{line}{attrs}"


APP = [frame(f"view_{n}", f"/app/views{n % 3}.py", 10 + n) for n in range(6)]
LIBRARY = [frame(f"lib_{n}", f"{LIB}pkg{n % 4}/mod.py", 100 + n) for n in range(8)]
BUILTINS = [frame(name, "<built-in>", 0) for name in ("sleep", "recv", "loads")]
GLUE = [
    frame("use_span", f"{LIB}site-packages/opentelemetry/trace/__init__.py", 560),
    frame("__exit__", f"{LIB}contextlib.py", 140),
]
PROFILER = [
    frame("on_end", os.path.join(PACKAGE, "processor.py"), 200),
    frame("unsubscribe", os.path.join(PYINSTRUMENT, "stack_sampler.py"), 90),
]
METHODS = [
    frame("handle", "/app/handlers.py", 30, "\x01cOrders\x01l31"),
    frame("handle", "/app/handlers.py", 30, "\x01cInvoices\x01l33"),
    frame("run", f"{LIB}pkg9/worker.py", 5, "\x01cWorker"),
]
# Two identifiers that are one function for the tree (function, file, line): siblings the
# library collapsing merges.
TWINS = [frame("lib_0", f"{LIB}pkg0/mod.py", 100, "\x00twin")]


def random_records(rng: random.Random, *, profiler: bool) -> Records:
    pool = APP + LIBRARY + BUILTINS + GLUE + METHODS + TWINS + (PROFILER if profiler else [])
    weights = [3] * len(APP) + [4] * len(LIBRARY) + [2] * (len(pool) - len(APP) - len(LIBRARY))
    records: Records = []
    stack = [THREAD, MAIN]
    for _ in range(rng.randint(1, 60)):
        # A random walk: return a few frames, call a few new ones (prefixes are shared, as
        # in consecutive samples of a real request).
        del stack[max(2, len(stack) - rng.randint(0, 4)) :]
        stack += rng.choices(pool, weights, k=rng.randint(0, 5))
        # Elapsed times from a few values, so that subtree totals tie with the threshold.
        records.append((list(stack), rng.choice((0.001, 0.001, 0.002, 0.0005, 0.01, 0.125, 0.25))))
    return records


def options_for(rng: random.Random) -> PruneOptions:
    return PruneOptions(
        # 1/8 and 1/4 with the power-of-two sample times: subtrees exactly at the threshold.
        min_share=rng.choice((0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.125, 0.25)),
        max_depth=rng.choice((None, None, None, None, None, 1, 4)),
        # pyinstrument as a library (installed in site-packages) or not (the package).
        library_prefixes=rng.choice(((LIB,), (LIB, PYINSTRUMENT))),
        library_self_share=rng.choice((0.2, 0.2, 0.0, 0.05, 0.5, 1.0)),
    )


def node_path(
    records: Records, start: Sequence[str], options: PruneOptions, max_bytes: int
) -> EncodedProfile | str | None:
    """The reference: CallTreeNodes, pruning steps, encode_profile."""
    tree = tree_from_frame_records(records, start, options.min_share)
    if tree is None:
        return None
    try:
        return encode_profile(prune(tree, options, STEPS_AFTER_BUILD), max_bytes=max_bytes)
    except ProfileTooLargeError:
        return "too large"


def one_walk(
    records: Records, start: Sequence[str], options: PruneOptions, max_bytes: int
) -> EncodedProfile | str | None:
    """The processor's path: samples aggregated one by one as they come, one walk."""
    aggregator = StackAggregator()
    for record in records:
        aggregator.add_all((record,))
    top = top_of_tree(aggregator.finish(), start)
    if top is None:
        return None
    try:
        return encode_aggregated(top, options, max_bytes=max_bytes)
    except ProfileTooLargeError:
        return "too large"


def walked(records: Records, start: Sequence[str], options: PruneOptions) -> bool:
    """Whether the walk wrote the payload itself (not handed to the node path), and if so
    that it is the node path's payload."""
    top = top_of_tree(aggregate_frame_records(records, start), start)
    assert top is not None
    raw = payload_of_builders(top, options)
    if raw is None:
        return False
    tree = tree_from_frame_records(records, start, options.min_share)
    assert tree is not None
    assert raw == payload_json(prune(tree, options, STEPS_AFTER_BUILD))
    return True


def test_same_bytes_as_the_node_path_on_random_trees() -> None:
    rng = random.Random(20261126)
    plain = walks = 0
    for case in range(1500):
        with_profiler = case % 5 == 0
        records = random_records(rng, profiler=with_profiler)
        options = options_for(rng)
        start = rng.choice(([THREAD, MAIN], [THREAD], []))
        max_bytes = DEFAULT_MAX_BYTES if case % 4 else rng.choice((120, 300, 600, 1200))
        expected = node_path(records, start, options, max_bytes)
        assert one_walk(records, start, options, max_bytes) == expected, (case, records)
        if not with_profiler and options.max_depth is None:
            plain += 1
            walks += walked(records, start, options)
    # Without profiler frames or a depth limit, the walk does nearly every tree itself:
    # only frames that the collapsing merges go to the node path.
    assert walks > 0.75 * plain, (walks, plain)


def test_every_shape_the_walk_hands_over_is_met_and_still_the_same_bytes() -> None:
    # Profiler plumbing under the request (removed by the node path).
    plumbing = [([THREAD, MAIN, APP[0]], 0.004), ([THREAD, MAIN, GLUE[0], PROFILER[0]], 0.001)]
    # A library frame whose library children meet again at one function (merged).
    merging = [
        ([THREAD, MAIN, LIBRARY[0], LIBRARY[1], BUILTINS[0]], 0.002),
        ([THREAD, MAIN, LIBRARY[0], LIBRARY[2], BUILTINS[0]], 0.003),
    ]
    # Profiler code below a depth limit (its plumbing removal runs before the cut).
    deep_plumbing = [([THREAD, MAIN, APP[0], APP[1], GLUE[0], PROFILER[1]], 0.001)]
    # A depth limit alone.
    deep = [([THREAD, MAIN, APP[0], APP[1], APP[2]], 0.001)]
    options = PruneOptions(min_share=0.0, library_prefixes=(LIB,), max_depth=1)
    for records in (plumbing, merging, deep_plumbing, deep):
        start = [THREAD, MAIN]
        assert not walked(records, start, options)
        expected = node_path(records, start, options, DEFAULT_MAX_BYTES)
        assert isinstance(expected, EncodedProfile)
        assert one_walk(records, start, options, DEFAULT_MAX_BYTES) == expected
    unlimited = PruneOptions(min_share=0.0, library_prefixes=(LIB,))
    assert not walked(merging, [THREAD, MAIN], unlimited)
    encoded = one_walk(merging, [THREAD, MAIN], unlimited, DEFAULT_MAX_BYTES)
    assert encoded == node_path(merging, [THREAD, MAIN], unlimited, DEFAULT_MAX_BYTES)
    assert isinstance(encoded, EncodedProfile)
    merged = decode_profile(encoded.tree)
    assert [child.function for child in merged.children] == ["lib_0"]
    assert [child.function for child in merged.children[0].children] == ["sleep"]


def test_profiler_code_inside_collapsed_library_frames_goes_to_the_node_path() -> None:
    # pyinstrument installed as a library: the plumbing (contextlib into pyinstrument, back
    # into OpenTelemetry) sits in library frames the collapsing would remove down to the
    # OpenTelemetry leaf; the node path removes the plumbing whole first.
    records = [
        ([THREAD, MAIN, LIBRARY[0], GLUE[1], PROFILER[1], GLUE[0]], 0.001),
        ([THREAD, MAIN, LIBRARY[0], BUILTINS[1]], 0.004),
    ]
    options = PruneOptions(min_share=0.0, library_prefixes=(LIB, PYINSTRUMENT))
    assert not walked(records, [THREAD, MAIN], options)
    encoded = one_walk(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert encoded == node_path(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert isinstance(encoded, EncodedProfile)
    functions = [node.function for node, _ in iter_nodes(decode_profile(encoded.tree))]
    assert functions == ["main", "lib_0", "recv"]


def test_a_frame_exactly_at_the_min_share_threshold_stays() -> None:
    # 1/4 of 0.5 s is exactly 0.125 s: the node path keeps a subtree of that total (it
    # folds only those below), under an application frame and under a library frame.
    records = [
        ([THREAD, MAIN, APP[0], APP[1]], 0.125),
        ([THREAD, MAIN, APP[0]], 0.125),
        ([THREAD, MAIN, LIBRARY[0], BUILTINS[0]], 0.125),
        ([THREAD, MAIN, LIBRARY[0], BUILTINS[1]], 0.0625),
        ([THREAD, MAIN, LIBRARY[0]], 0.0625),
    ]
    options = PruneOptions(min_share=0.25, library_prefixes=(LIB,))
    assert walked(records, [THREAD, MAIN], options)
    encoded = one_walk(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert encoded == node_path(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert isinstance(encoded, EncodedProfile)
    functions = [node.function for node, _ in iter_nodes(decode_profile(encoded.tree))]
    assert functions == ["main", "view_0", "view_1", "lib_0", "sleep"]


def test_methods_take_the_dominant_class_and_the_first_on_a_tie() -> None:
    orders, invoices = METHODS[0], METHODS[1]
    records = [
        ([THREAD, MAIN, orders], 0.002),
        ([THREAD, MAIN, invoices], 0.002),
        ([THREAD, MAIN, APP[0], invoices], 0.003),
        ([THREAD, MAIN, APP[0], orders], 0.001),
    ]
    options = PruneOptions(min_share=0.0, library_prefixes=(LIB,))
    assert walked(records, [THREAD, MAIN], options)
    encoded = one_walk(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert encoded == node_path(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert isinstance(encoded, EncodedProfile)
    tree = decode_profile(encoded.tree)
    assert [c.function for c in tree.children] == ["Orders.handle", "view_0"]
    assert tree.children[1].children[0].function == "Invoices.handle"


def test_a_library_frame_with_exactly_the_significant_self_time_stays() -> None:
    # Powers of two: the threshold (0.5 of 0.5 s) is exactly the frame's self time.
    records = [
        ([THREAD, MAIN, LIBRARY[0], LIBRARY[1], LIBRARY[2], BUILTINS[0]], 0.25),
        ([THREAD, MAIN, LIBRARY[0], LIBRARY[1]], 0.25),
    ]
    options = PruneOptions(min_share=0.0, library_prefixes=(LIB,), library_self_share=0.5)
    assert walked(records, [THREAD, MAIN], options)
    encoded = one_walk(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert encoded == node_path(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    assert isinstance(encoded, EncodedProfile)
    functions = [node.function for node, _ in iter_nodes(decode_profile(encoded.tree))]
    assert functions == ["main", "lib_0", "lib_1", "sleep"]  # lib_2 collapsed, lib_1 kept


def test_deep_stacks_are_cut_at_the_depth_limit_and_oversize_trees_truncated() -> None:
    chain = [frame(f"f{n}", f"/app/deep{n % 7}.py", n) for n in range(3000)]
    records = [([THREAD, MAIN, *chain[:depth]], 0.001) for depth in (3000, 2990, 1500, 40)]
    for max_depth in (None, 16, 128):
        options = PruneOptions(min_share=0.0, library_prefixes=(LIB,), max_depth=max_depth)
        assert walked(records, [THREAD, MAIN], options) == (max_depth is None)
        for max_bytes in (DEFAULT_MAX_BYTES, 4000, 30):
            expected = node_path(records, [THREAD, MAIN], options, max_bytes)
            assert one_walk(records, [THREAD, MAIN], options, max_bytes) == expected
    truncated = one_walk(records, [THREAD, MAIN], PruneOptions(min_share=0.0), 4000)
    assert isinstance(truncated, EncodedProfile) and truncated.truncated


def test_file_names_that_need_escaping_are_written_the_same() -> None:
    odd = [
        frame("naïve", "/app/ünïcode.py", 3),
        frame("quote", '/app/"quoted"\\path.py', 4),
        frame("lone", "/app/\udcff.py", 5),
        frame("lone", "/app/\\udcff.py", 5),  # the escape's own text: a different string
    ]
    records = [([THREAD, MAIN, f], 0.001 * (n + 1)) for n, f in enumerate(odd)]
    options = PruneOptions(min_share=0.0, library_prefixes=(LIB,))
    assert walked(records, [THREAD, MAIN], options)
    assert one_walk(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES) == node_path(
        records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES
    )


def real_work() -> int:
    # Library code (json, the re module, sorting) under application frames.
    end = time.perf_counter() + 0.03
    count = 0
    while time.perf_counter() < end:
        count += len(json.dumps([{"n": n, "s": str(n)} for n in range(200)]))
        count += len(sorted(json.loads(json.dumps(list(range(300))))))
    return count


def test_same_bytes_on_real_pyinstrument_samples() -> None:
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    hook = HookProfile(interval=0.0005, strict=False, max_duration=None, use_timing_thread=None)
    profiler.start()
    hook.start(sys._getframe())
    real_work()
    hook.stop()
    session = profiler.stop()
    assert len(session.frame_records) >= 5 and hook.aggregator is not None
    samples = (
        (session.frame_records, session.start_call_stack),
        (hook.records, hook.start_call_stack()),
    )
    clean_walks = 0
    for min_share in (0.0, 0.005, 0.05):
        for max_depth in (None, 3):
            options = PruneOptions(min_share=min_share, max_depth=max_depth)
            for records, start in samples:
                expected = node_path(records, start, options, DEFAULT_MAX_BYTES)
                assert isinstance(expected, EncodedProfile)
                assert one_walk(records, start, options, DEFAULT_MAX_BYTES) == expected
                # Without the samples that fell in the profilers' own start and stop (the
                # node path's plumbing removal), the walk writes the tree itself (unless
                # the collapsing merges frames, which these samples hardly give).
                clean = [
                    (stack, elapsed)
                    for stack, elapsed in records
                    if not any(PACKAGE in info or PYINSTRUMENT in info for info in stack)
                ]
                if clean and max_depth is None:
                    clean_walks += walked(clean, start, options)
                    assert one_walk(clean, start, options, DEFAULT_MAX_BYTES) == node_path(
                        clean, start, options, DEFAULT_MAX_BYTES
                    )
            top = top_of_tree(hook.aggregator.finish(), hook.start_call_stack())
            assert top is not None
            assert encode_aggregated(top, options) == node_path(
                hook.records, hook.start_call_stack(), options, DEFAULT_MAX_BYTES
            )
    assert clean_walks >= 3


@pytest.mark.parametrize("seed", range(3))
def test_the_builders_are_only_read(seed: int) -> None:
    rng = random.Random(seed)
    records = random_records(rng, profiler=False)
    options = options_for(rng)
    top = top_of_tree(aggregate_frame_records(records, [THREAD, MAIN]), [THREAD, MAIN])
    assert top is not None
    first = encode_aggregated(top, options)
    assert encode_aggregated(top, options) == first
    assert first == node_path(records, [THREAD, MAIN], options, DEFAULT_MAX_BYTES)


def test_one_sample_trees_from_templates_are_the_walks_bytes() -> None:
    # A profile of one sample is encoded from a template of its stack (made the second
    # time the stack is seen), with its time filled in: the same bytes as the walk, whatever
    # the time, the stem, the options; None where the walk itself has to run.
    rng = random.Random(11)
    pool = APP + LIBRARY + BUILTINS + GLUE + METHODS + TWINS + PROFILER
    stems = ([THREAD, MAIN], [THREAD], [], [MAIN], [THREAD, MAIN, APP[0]])
    filled = 0
    for case in range(400):
        stack = [THREAD, MAIN, *rng.choices(pool, k=rng.randint(0, 12))]
        start = list(rng.choice(stems))
        options = options_for(rng)
        max_bytes = DEFAULT_MAX_BYTES if case % 5 else rng.choice((120, 300))
        # The walk's own cases (profiler code, a depth limit, a tree over the cap) aside, a
        # stack is filled in from its second sighting on.
        fillable = (
            not set(stack) & set(PROFILER)
            and options.max_depth is None
            and max_bytes == DEFAULT_MAX_BYTES
        )
        for sighting, elapsed in enumerate((0.0, 1e-7, 0.0123456, 0.004095, 0.004096, 2.5)):
            expected = one_walk([(stack, elapsed)], start, options, max_bytes)
            assert expected is not None
            got = encode_single_sample(stack, elapsed, start, options, max_bytes=max_bytes)
            if got is None:
                assert not fillable or sighting == 0, (case, stack, options)
                continue
            filled += 1
            assert got == expected, (case, stack, start, elapsed)
    assert filled > 500


def test_a_stack_gets_its_template_on_its_second_sighting_and_keeps_its_options() -> None:
    stack = [THREAD, MAIN, APP[1], METHODS[0], LIBRARY[2], BUILTINS[0]]
    options = PruneOptions(library_prefixes=(LIB,))
    assert encode_single_sample(stack, 0.002, [THREAD, MAIN], options) is None
    second = encode_single_sample(stack, 0.002, [THREAD, MAIN], options)
    assert second == one_walk([(stack, 0.002)], [THREAD, MAIN], options, DEFAULT_MAX_BYTES)
    # Other options (another processor): their own template, never the first one's.
    other = PruneOptions(library_prefixes=())
    for _ in range(3):
        assert encode_single_sample(stack, 0.003, [THREAD, MAIN], other) in (
            None,
            one_walk([(stack, 0.003)], [THREAD, MAIN], other, DEFAULT_MAX_BYTES),
        )
    assert encode_single_sample(stack, 0.003, [THREAD, MAIN], other) == one_walk(
        [(stack, 0.003)], [THREAD, MAIN], other, DEFAULT_MAX_BYTES
    )
    # Profiler code on the stack: the walk hands it over, so the template never exists.
    plumbing = [THREAD, MAIN, GLUE[0], PROFILER[0]]
    assert all(
        encode_single_sample(plumbing, 0.001, [THREAD, MAIN], options) is None for _ in range(3)
    )
