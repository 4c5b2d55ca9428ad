"""The processor's call tree, pruned and encoded straight from the aggregated builders.

The node path builds a :class:`~calltree.CallTreeNode` per builder (folding subtrees under
``min_share``), then prunes (plumbing removal, library collapsing, depth limit: a walk
each) and writes the JSON (another walk). On the request's thread that is most of a
profiled request's cost at stop. :func:`encode_aggregated` does it in one walk over the
builders and makes no node, with the same bytes: the same folding and collapsing in the
same order, the same float additions, the same string table. Where that path does
something the walk does not, the tree is handed to it whole, so the bytes stay the same:

- profiler code somewhere in the tree (a sample that fell in the span's own start or end,
  which :func:`~pruning.remove_profiler_frames` takes out with the frames leading to it);
- library collapsing that brings two frames of the same function under one parent (the node
  path merges them, :func:`~pruning.collapse_library_frames`);
- a depth limit (``PruneOptions.max_depth``: the processor sets none);
- a payload over the size cap (the node path prunes harder until it fits).

tests/unit/test_tree_encoding.py runs both paths on many trees and compares the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from otel_pyinstrument_processor.pruning import (
    DEFAULT_STEPS,
    FileVerdicts,
    PruneOptions,
    fold_small_frames,
    paths_for,
    prune,
)
from otel_pyinstrument_processor.tree_builder import (
    Builder,
    aggregate_frame_records,
    class_name_of,
    describe_builder,
    identifier_parts,
    nodes_from_builders,
    top_of_tree,
)
from otel_pyinstrument_processor.wire import (
    DEFAULT_MAX_BYTES,
    PROFILE_FORMAT_V1,
    EncodedProfile,
    compress_payload,
    encode_profile,
    payload_bytes,
    string_literal,
)

STEPS_AFTER_BUILD = tuple(step for step in DEFAULT_STEPS if step is not fold_small_frames)
"""The pruning steps after :func:`~tree_builder.nodes_from_builders` (which already folded
subtrees under ``min_share``; the other steps only merge time upwards, so folding again
would find nothing): what :func:`encode_aggregated` does in its walk."""


def encode_aggregated(
    top: Builder, options: PruneOptions, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> EncodedProfile:
    """The encoded tree under ``top`` (see :func:`~tree_builder.top_of_tree`) pruned under
    ``options``: byte for byte ``encode_profile(prune(nodes_from_builders(top,
    options.min_share), options, STEPS_AFTER_BUILD), max_bytes=max_bytes)``.

    Raises :class:`~wire.ProfileTooLargeError` as :func:`~wire.encode_profile` does. The
    builders are only read."""
    raw = payload_of_builders(top, options)
    if raw is not None:
        text = compress_payload(raw)
        if len(text) <= max_bytes:
            return EncodedProfile(text, PROFILE_FORMAT_V1, False)
    tree = nodes_from_builders(top, options.min_share)
    return encode_profile(prune(tree, options, STEPS_AFTER_BUILD), max_bytes=max_bytes)


def encode_single_sample(
    stack: list[str],
    elapsed: float,
    start_call_stack: Sequence[str],
    options: PruneOptions,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> EncodedProfile | None:
    """The encoded tree of a profile of one sample, ``(stack, elapsed)``: byte for byte
    ``encode_aggregated(top_of_tree(aggregate_frame_records([(stack, elapsed)],
    start_call_stack), start_call_stack), options)``, or None where that has to run (a
    stack seen for the first time, a tree the one-walk encoder hands to the node path, or
    one over ``max_bytes``).

    Most sampled requests of a fast endpoint get one sample (at 100 Hz, one 1-2 ms request
    in six or eight), and their trees are chains whose shape does not depend on the
    sample's time: one child per node never falls under ``min_share`` of the root, no
    library frame on the chain has self time but the leaf. So the payload of a stack is a
    template in which only the time (every node's total, the leaf's self time) changes:
    made at the second time the stack is seen, filled in afterwards (in a Flask app, the
    whole path for such a request cost 120-140 µs, most of it cold caches; a filled
    template costs a few)."""
    key = (tuple(stack), tuple(start_call_stack))
    entry = _TEMPLATES.get(key)
    if entry is None or entry[0] is not options:
        if key not in _SEEN_ONCE:
            if len(_SEEN_ONCE) >= _MAX_TEMPLATES:
                _SEEN_ONCE.clear()
            _SEEN_ONCE.add(key)
            return None
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        entry = _TEMPLATES[key] = (options, _template(stack, start_call_stack, options))
    pieces = entry[1]
    if pieces is None:
        return None
    micros = round(elapsed * 1_000_000)
    raw = (_TEXT[micros] if micros < len(_TEXT) else str(micros)).encode().join(pieces)
    text = compress_payload(raw)
    if len(text) > max_bytes:
        return None
    return EncodedProfile(text, PROFILE_FORMAT_V1, False)


def _template(
    stack: list[str], start_call_stack: Sequence[str], options: PruneOptions
) -> list[bytes] | None:
    """The payload of the one-sample tree of ``stack`` split where its time goes, checked
    against a second payload made with another time; None when no template can stand for
    it (the node path's cases, see the module's docstring)."""
    pieces: list[bytes] | None = None
    for probe in _PROBES:
        top = top_of_tree(
            aggregate_frame_records([(stack, probe / 1_000_000)], start_call_stack),
            start_call_stack,
        )
        raw = None if top is None else payload_of_builders(top, options)
        if raw is None:
            return None
        if pieces is None:
            pieces = raw.split(str(probe).encode())
        elif str(probe).encode().join(pieces) != raw:
            return None  # the time showed somewhere else too: no template
    return pieces


# Two times no payload shows by chance (a line or string would have to hold the digits).
_PROBES = (8_765_432_109_876, 9_182_736_450_123)
_MAX_TEMPLATES = 4096
_StackKey = tuple[tuple[str, ...], tuple[str, ...]]  # (stack, start call stack)
# A stack's key -> (the options its template was made under, the payload's pieces).
_TEMPLATES: dict[_StackKey, tuple[PruneOptions, list[bytes] | None]] = {}
_SEEN_ONCE: set[_StackKey] = set()


def payload_of_builders(top: Builder, options: PruneOptions) -> bytes | None:
    """The payload JSON of the pruned tree under ``top`` (``payload_json`` of the node
    path's tree), or None where the node path has to do it (see the module's docstring)."""
    if options.max_depth is not None:
        return None  # the processor sets no depth limit; only encode_profile's rungs do
    verdicts = paths_for(options)
    facts_of = _facts_table(verdicts)
    known = facts_of.get
    text = _TEXT
    small = len(text)
    min_total = options.min_share * top.total
    strings: list[str] = []
    index: dict[str, str] = {}  # string -> its position in the table, as text
    nodes: list[str] = []
    stack = [top]
    pop = stack.pop
    extend = stack.extend
    while stack:
        builder = pop()
        function, file, line, library, profiler, function_literal, file_literal = known(
            builder.identifier
        ) or _learn(facts_of, builder.identifier, verdicts)
        if profiler:
            return None
        # Folding (nodes_from_builders): the children under min_share become self time.
        own = builder.self_time
        kept: list[Builder] = []
        if builder.children:
            if library:
                # collapse_library_frames removes only library frames with children under
                # a library frame: look closer only when there is one.
                collapsible = False
                for child in builder.children.values():
                    if child.total < min_total:
                        own += child.total
                    else:
                        kept.append(child)
                        if child.children and not collapsible:
                            child_facts = known(child.identifier) or _learn(
                                facts_of, child.identifier, verdicts
                            )
                            collapsible = child_facts[_LIBRARY]
                if collapsible:
                    significant = options.library_self_share * top.total
                    collapsed = _collapse(kept, own, min_total, significant, facts_of, verdicts)
                    if collapsed is None:
                        return None
                    own, kept = collapsed
            else:
                for child in builder.children.values():
                    if child.total < min_total:
                        own += child.total
                    else:
                        kept.append(child)
            extend(reversed(kept))
        if builder.class_time:
            function, function_literal = _method_name(builder)
        position = index.get(function)
        if position is None:
            count = len(strings)
            position = index[function] = text[count] if count < small else str(count)
            strings.append(function_literal)
        file_position = index.get(file)
        if file_position is None:
            count = len(strings)
            file_position = index[file] = text[count] if count < small else str(count)
            strings.append(file_literal)
        # Integers as text from a table where they are small: formatting an int costs
        # ~100 ns on the 2-core VM, a node has seven.
        total = round(builder.total * 1_000_000)
        own_us = round(own * 1_000_000) if own else 0
        samples = builder.samples
        count = len(kept)
        nodes.append(
            f"[{position},{file_position},{line},"
            f"{(text[total] if total < small else str(total)) if total > 0 else '0'},"
            f"{(text[own_us] if own_us < small else str(own_us)) if own_us > 0 else '0'},"
            f"{text[samples] if samples < small else str(samples)},"
            f"{text[count] if count < small else str(count)}]"
        )
    return payload_bytes(strings, nodes)


_TEXT = tuple(str(number) for number in range(4096))


def _method_name(builder: Builder) -> tuple[str, str]:
    """A method's ``Class.method`` name (see :func:`~tree_builder.describe_builder`) and
    its string literal."""
    key = (class_name_of(builder), builder.identifier)
    name = _METHOD_NAMES.get(key)
    if name is None:
        if len(_METHOD_NAMES) >= _MAX_CACHED_FACTS:
            _METHOD_NAMES.clear()
        function = describe_builder(builder)[0]
        name = _METHOD_NAMES[key] = (function, string_literal(function))
    return name


# What the walk needs of a frame identifier under one set of options, in one lookup:
# (function, file, line as text, library?, profiler code?, function literal, file literal).
_LIBRARY, _PROFILER = 3, 4
_FrameFacts = tuple[str, str, str, bool, bool, str, str]
_MAX_CACHED_FACTS = 50_000
_FACTS_BY_VERDICTS: dict[int, tuple[FileVerdicts, dict[str, _FrameFacts]]] = {}
_METHOD_NAMES: dict[tuple[str, str], tuple[str, str]] = {}


def _facts_table(verdicts: FileVerdicts) -> dict[str, _FrameFacts]:
    entry = _FACTS_BY_VERDICTS.get(id(verdicts))
    if entry is None or entry[0] is not verdicts:
        if len(_FACTS_BY_VERDICTS) >= 16:
            _FACTS_BY_VERDICTS.clear()
        entry = _FACTS_BY_VERDICTS[id(verdicts)] = (verdicts, {})
    return entry[1]


def _learn(table: dict[str, _FrameFacts], identifier: str, verdicts: FileVerdicts) -> _FrameFacts:
    if len(table) >= _MAX_CACHED_FACTS:
        table.clear()
    function, file, line = identifier_parts(identifier)
    facts = table[identifier] = (
        function,
        file,
        str(line),
        verdicts.library[file],
        verdicts.glue[file][1],
        string_literal(function),
        string_literal(file),
    )
    return facts


def _facts(
    builder: Builder, facts_of: dict[str, _FrameFacts], verdicts: FileVerdicts
) -> _FrameFacts:
    # (The walk itself inlines this lookup: a call per node costs ~0.1 µs.)
    return facts_of.get(builder.identifier) or _learn(facts_of, builder.identifier, verdicts)


def _folded(builder: Builder, min_total: float) -> tuple[float, list[Builder]]:
    """A builder's self time and children once the children under ``min_total`` are folded."""
    own = builder.self_time
    kept = []
    for child in builder.children.values():
        if child.total < min_total:
            own += child.total
        else:
            kept.append(child)
    return own, kept


def _collapse(
    children: list[Builder],
    own: float,
    min_total: float,
    significant: float,
    facts_of: dict[str, _FrameFacts],
    verdicts: FileVerdicts,
) -> tuple[float, list[Builder]] | None:
    """``collapse_library_frames`` at one library node: its self time and children after
    the removable children are replaced by what they lead to, or None when the node path
    must do it (a removed frame is profiler code, or two kept frames are one function).
    ``significant``: the self time from which a library frame stays."""
    if not any([_removal(child, min_total, significant, facts_of, verdicts) for child in children]):
        return own, children
    kept: list[Builder] = []
    pending = children[::-1]
    while pending:
        child = pending.pop()
        removal = _removal(child, min_total, significant, facts_of, verdicts)
        if removal is None:
            kept.append(child)
            continue
        if _facts(child, facts_of, verdicts)[_PROFILER]:
            return None
        own += removal[0]
        pending.extend(reversed(removal[1]))
    if len({describe_builder(child) for child in kept}) != len(kept):
        return None  # the node path merges them (pruning._add_children)
    return own, kept


def _removal(
    child: Builder,
    min_total: float,
    significant: float,
    facts_of: dict[str, _FrameFacts],
    verdicts: FileVerdicts,
) -> tuple[float, list[Builder]] | None:
    """For a library frame that ``collapse_library_frames`` removes (it has children, all
    library code, and less than ``significant`` self time), its folded self time and
    children; None for a frame that stays."""
    if not child.children:
        return None
    if not _facts(child, facts_of, verdicts)[_LIBRARY]:
        return None
    child_own, grandchildren = _folded(child, min_total)
    if not grandchildren or (significant > 0 and child_own >= significant):
        return None
    for grandchild in grandchildren:
        if not _facts(grandchild, facts_of, verdicts)[_LIBRARY]:
            return None
    return child_own, grandchildren
