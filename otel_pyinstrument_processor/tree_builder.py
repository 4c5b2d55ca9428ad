"""Building a call tree from sampled stacks (pyinstrument's frame records, or the sampling
thread's, which use the same frame identifiers).

Iterative throughout: real call stacks can be as deep as the recursion limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyinstrument.frame_info import ATTRIBUTE_MARKER_CLASS_NAME, ATTRIBUTES_SEP, IDENTIFIER_SEP
from pyinstrument.session import Session

from otel_pyinstrument_processor.calltree import CallTreeNode


class Builder:
    """One call path's aggregate while samples come in: children by frame identifier, in
    order of first sample; ``class_time`` is seconds per class name seen on a method."""

    __slots__ = ("children", "class_time", "identifier", "samples", "self_time", "total")

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.children: dict[str, Builder] = {}
        self.class_time: dict[str, float] | None = None  # made for methods only
        self.total = 0.0
        self.self_time = 0.0
        self.samples = 0


def build_call_tree(session: Session) -> CallTreeNode | None:
    """The aggregated call tree of a pyinstrument session, or None if it has no samples.

    Built from ``session.frame_records`` so per-node sample counts are exact. The stem of
    frames above the span (thread bootstrap, server loop) is trimmed the way pyinstrument
    does: the root is the deepest frame on ``session.start_call_stack`` that encloses every
    sample. Methods are named ``Class.method`` when pyinstrument saw the class.
    """
    return tree_from_frame_records(session.frame_records, session.start_call_stack)


def tree_from_frame_records(
    frame_records: Sequence[tuple[Sequence[str], float]],
    start_call_stack: Sequence[str] = (),
    min_share: float = 0.0,
) -> CallTreeNode | None:
    """Build the tree from raw pyinstrument frame records; see :func:`build_call_tree`.

    With ``min_share`` > 0, subtrees below that share of the root's total time are folded
    into their parent while the nodes are made (as :func:`fold_small_frames` would do after),
    so the tree is never built in full: most nodes of a deep request are tiny.
    """
    top = top_of_tree(aggregate_frame_records(frame_records, start_call_stack), start_call_stack)
    return None if top is None else nodes_from_builders(top, min_share)


def tree_from_aggregator(
    aggregator: StackAggregator,
    start_call_stack: Sequence[str] = (),
    min_share: float = 0.0,
) -> CallTreeNode | None:
    """The tree of the stacks ``aggregator`` was given (it is finished here); the same tree
    :func:`tree_from_frame_records` builds from the same stacks."""
    top = top_of_tree(aggregator.finish(), start_call_stack)
    return None if top is None else nodes_from_builders(top, min_share)


def aggregate_frame_records(
    frame_records: Sequence[tuple[Sequence[str], float]],
    start_call_stack: Sequence[str] = (),
) -> Builder:
    """The finished root builder of ``frame_records`` (what a :class:`StackAggregator` given
    the same stacks finishes with, whose :func:`top_of_tree` is the same)."""
    root = Builder("")
    if not frame_records:
        return root
    # Every sample starts with the frames above the one that started the profiler (thread
    # bootstrap, server loop): when all of them do, skip that stem instead of walking it in
    # every sample; it is trimmed from the tree anyway. (The starting frame itself is
    # compared by identifier only: its line has moved since.)
    skip = max(0, len(start_call_stack) - 1)
    stem = list(start_call_stack[:skip]) if skip > 0 else []
    if stem and not all(list(stack[:skip]) == stem for stack, _ in frame_records):
        skip, stem = 0, []
    top_of_stem = root
    if stem:
        for frame_info in stem:
            identifier, _class = _PARSED.get(frame_info) or _parsed_frame_info(frame_info)
            link = Builder(identifier)
            top_of_stem.children[identifier] = link
            top_of_stem = link
    aggregator = StackAggregator(top_of_stem)
    aggregator.add_all(frame_records, skip)
    aggregator.finish()
    if stem:
        # The skipped stem is a single-child chain holding every sample.
        stem_node = root
        while stem_node is not top_of_stem:
            stem_node = next(iter(stem_node.children.values()))
            stem_node.total, stem_node.samples = top_of_stem.total, top_of_stem.samples
        root.total, root.samples = top_of_stem.total, top_of_stem.samples
    return root


def top_of_tree(root: Builder, start_call_stack: Sequence[str]) -> Builder | None:
    """The builder that becomes the tree's root: below the synthetic root and the stem
    trimmed along ``start_call_stack``; None when nothing was sampled."""
    if root.samples == 0:
        return None
    top = root
    if len(root.children) == 1 and root.self_time == 0:
        top = next(iter(root.children.values()))
    return _trim_stem(top, start_call_stack)


class StackAggregator:
    """Adds sampled stacks to a tree of builders, a batch at a time, so that a sampling
    thread can aggregate a request's samples as it takes them.

    Consecutive samples mostly share a long prefix of their stacks. Only the frames past
    the shared prefix (found from the tip down) are walked; a node on the current path
    accumulates its time, sample count and class time when it leaves the path, as the
    difference of running sums since it entered (exact, and the cost per sample is the part
    of the stack that changed).
    Not thread-safe: one writer, then :meth:`finish`.
    """

    __slots__ = ("_base", "_count", "_elapsed_sum", "_path_enter", "_path_infos", "_path_nodes")

    def __init__(self, base: Builder | None = None) -> None:
        self._base = base if base is not None else Builder("")
        self._path_nodes: list[Builder] = []
        self._path_infos: list[str] = []
        self._path_enter: list[tuple[float, int, str | None]] = []
        self._elapsed_sum = 0.0
        self._count = 0

    @property
    def samples(self) -> int:
        """How many stacks were added so far."""
        return self._count

    def add(self, stack: list[str], elapsed: float) -> None:
        """Add one sample: its stack (frame infos, root first) and its elapsed seconds."""
        path_nodes = self._path_nodes
        path_infos = self._path_infos
        path_enter = self._path_enter
        # The longest prefix shared with the previous stack. Consecutive samples mostly
        # differ near the tip only: find the deepest frame equal to the path's, then check
        # the frames above it in one C-level list comparison; a binary search when that
        # fails (the same frame reached another way, e.g. recursion).
        low = len(stack)
        if low > len(path_infos):
            low = len(path_infos)
        while low and stack[low - 1] != path_infos[low - 1]:
            low -= 1
        if low > 1 and stack[: low - 1] != path_infos[: low - 1]:
            low = _shared_prefix(stack, path_infos, low - 2)
        if low < len(path_nodes):
            _leave(path_nodes, path_enter, low, self._elapsed_sum, self._count)
            del path_nodes[low:], path_infos[low:], path_enter[low:]
        node = path_nodes[-1] if path_nodes else self._base
        if low < len(stack):
            elapsed_sum = self._elapsed_sum
            count = self._count
            parsed = _PARSED
            for frame_info in stack[low:]:
                info = parsed.get(frame_info)
                if info is None:
                    info = _parsed_frame_info(frame_info)
                identifier, class_name = info
                child = node.children.get(identifier)
                if child is None:
                    child = node.children[identifier] = Builder(identifier)
                path_nodes.append(child)
                path_infos.append(frame_info)
                path_enter.append((elapsed_sum, count, class_name))
                node = child
        node.self_time += elapsed
        self._elapsed_sum += elapsed
        self._count += 1

    def add_all(self, frame_records: Sequence[tuple[Sequence[str], float]], skip: int = 0) -> None:
        """Add ``(stack root first, elapsed seconds)`` samples, each minus its first
        ``skip`` frames."""
        add = self.add
        for stack, elapsed in frame_records:
            if type(stack) is not list:
                stack = list(stack)
            add(stack[skip:] if skip else stack, elapsed)

    def finish(self) -> Builder:
        """Close the open path and return the root builder (idempotent)."""
        base = self._base
        if self._path_nodes or base.samples != self._count:
            _leave(self._path_nodes, self._path_enter, 0, self._elapsed_sum, self._count)
            self._path_nodes.clear()
            self._path_infos.clear()
            self._path_enter.clear()
            base.total = self._elapsed_sum
            base.samples = self._count
        return base


def _shared_prefix(stack: list[str], path_infos: list[str], high: int) -> int:
    """The length of the longest common prefix of ``stack`` and ``path_infos``, known to
    be at most ``high``: a binary search on C-level slice comparisons."""
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        if stack[:middle] == path_infos[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _leave(
    path_nodes: list[Builder],
    path_enter: list[tuple[float, int, str | None]],
    low: int,
    elapsed_sum: float,
    count: int,
) -> None:
    """The nodes of the path from ``low`` down leave it: add what they saw since they
    entered (deepest first, as they return)."""
    for index in range(len(path_nodes) - 1, low - 1, -1):
        node = path_nodes[index]
        elapsed_then, count_then, class_name = path_enter[index]
        spent = elapsed_sum - elapsed_then
        node.total += spent
        node.samples += count - count_then
        if class_name is not None:
            class_time = node.class_time
            if class_time is None:
                node.class_time = {class_name: spent}
            else:
                class_time[class_name] = class_time.get(class_name, 0.0) + spent


# Frame info strings recur across requests (same code, same lines): parse each once per
# process. Bounded: cleared when full (e.g. code generated at run time).
_MAX_CACHED_FRAMES = 50_000
_PARSED: dict[str, tuple[str, str | None]] = {}
_SPLIT: dict[str, tuple[str, str, int]] = {}


def _parsed_frame_info(frame_info: str) -> tuple[str, str | None]:
    if len(_PARSED) >= _MAX_CACHED_FRAMES:
        _PARSED.clear()
    info = _PARSED[frame_info] = _parse_frame_info(frame_info)
    return info


def _parse_frame_info(frame_info: str) -> tuple[str, str | None]:
    """(identifier, class name or None) of a pyinstrument frame info string."""
    identifier, _, attributes = frame_info.partition(ATTRIBUTES_SEP)
    for attribute in attributes.split(ATTRIBUTES_SEP) if attributes else ():
        if attribute.startswith(ATTRIBUTE_MARKER_CLASS_NAME):
            return identifier, attribute[1:]
    return identifier, None


def _trim_stem(top: Builder, start_call_stack: Sequence[str]) -> Builder:
    # Same rule as pyinstrument's Session._trim_stem: walk down the single-child chain
    # while it follows the stack that started the profiler.
    # (Identifiers are cut from the frame infos only as far as the walk goes.)
    if not start_call_stack or _identifier_of(start_call_stack[0]) != top.identifier:
        return top
    for info in start_call_stack[1:]:
        if top.self_time != 0 or len(top.children) != 1:
            break
        child = next(iter(top.children.values()))
        if child.identifier != _identifier_of(info):
            break
        top = child
    return top


def _identifier_of(frame_info: str) -> str:
    parsed = _PARSED.get(frame_info)
    return parsed[0] if parsed is not None else frame_info.partition(ATTRIBUTES_SEP)[0]


def nodes_from_builders(top: Builder, min_share: float = 0.0) -> CallTreeNode:
    """The :class:`CallTreeNode` tree under ``top``; subtrees below ``min_share`` of
    ``top``'s total time are folded into their parent's self time as they are met."""
    min_total = min_share * top.total
    root = _node_from_builder(top)
    stack = [(top, root)]
    while stack:
        builder, node = stack.pop()
        for child_builder in builder.children.values():
            if child_builder.total < min_total:
                node.self_time += child_builder.total
                continue
            child = _node_from_builder(child_builder)
            node.children.append(child)
            stack.append((child_builder, child))
    return root


def _node_from_builder(builder: Builder) -> CallTreeNode:
    function, file, line = describe_builder(builder)
    return CallTreeNode(function, file, line, builder.total, builder.self_time, builder.samples, [])


def describe_builder(builder: Builder) -> tuple[str, str, int]:
    """(function, file, line) of the node ``builder`` becomes: a method is named
    ``Class.method`` (see :func:`class_name_of`)."""
    split = _SPLIT.get(builder.identifier) or identifier_parts(builder.identifier)
    class_name = class_name_of(builder) if builder.class_time else None
    if class_name is None:
        return split
    return (f"{class_name}.{split[0]}", split[1], split[2])


def class_name_of(builder: Builder) -> str | None:
    """The class a method spent the most time in (the first seen on a tie); None for a
    function."""
    class_time = builder.class_time
    if not class_time:
        return None
    if len(class_time) == 1:
        return next(iter(class_time))
    return max(class_time, key=class_time.__getitem__)


def identifier_parts(identifier: str) -> tuple[str, str, int]:
    """(function, file, line) of a frame identifier (cached per process)."""
    split = _SPLIT.get(identifier)
    if split is None:
        if len(_SPLIT) >= _MAX_CACHED_FRAMES:
            _SPLIT.clear()
        split = _SPLIT[identifier] = _split_identifier(identifier)
    return split


def _split_identifier(identifier: str) -> tuple[str, str, int]:
    # "function\x00file\x00first_line"; C functions come as "name\x00<built-in>\x000".
    parts = identifier.split(IDENTIFIER_SEP)
    function = parts[0]
    file = parts[1] if len(parts) > 1 else ""
    try:
        line = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        line = 0
    return function, file, line
