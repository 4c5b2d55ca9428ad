"""The call tree of one profiled span: building it from a pyinstrument session, pruning it.

The tree is aggregated (like pyinstrument's default view): every distinct call path appears
once, children in the order they were first sampled. Pruning steps are plain functions
``step(tree, options) -> tree`` in the style of pyinstrument's ``processors.py``; they may
mutate the tree they are given. Every algorithm here is iterative, because real call stacks
can be as deep as the recursion limit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyinstrument
from pyinstrument.frame_info import ATTRIBUTE_MARKER_CLASS_NAME, ATTRIBUTES_SEP, IDENTIFIER_SEP
from pyinstrument.session import Session

_PACKAGE_DIR = os.path.dirname(__file__) + os.sep
_PYINSTRUMENT_DIR = os.path.dirname(pyinstrument.__file__) + os.sep


@dataclasses.dataclass(eq=False)
class CallTreeNode:
    """One function on one call path. Times are wall-clock seconds.

    ``total_time`` is ``self_time`` plus the children's ``total_time``; ``sample_count``
    counts the samples whose stack passed through this node (so it includes the children's).
    Nodes compare by identity: a tree is a mutable structure, not a value.
    """

    function: str
    file: str
    line: int
    total_time: float
    self_time: float
    sample_count: int
    children: list[CallTreeNode] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, int]:
        """What makes two sibling nodes the same function: (function, file, line)."""
        return (self.function, self.file, self.line)


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """Thresholds and path rules for the pruning steps."""

    min_share: float = 0.005
    """Frames below this share of the root's total time fold into their parent."""
    max_depth: int | None = None
    """Nodes deeper than this (root = 0) fold into their ancestor at this depth."""
    library_prefixes: tuple[str, ...] = dataclasses.field(
        default_factory=lambda: tuple(Session.current_sys_prefixes())
    )
    """A file under one of these is library code (the Python install and the virtualenv)."""
    library_self_share: float = 0.2
    """A library frame keeps its place when its own self time is at least this share."""
    profiler_paths: tuple[str, ...] = (_PACKAGE_DIR, _PYINSTRUMENT_DIR)
    """Files of the profiling machinery itself: this package and pyinstrument."""
    glue_fragments: tuple[str, ...] = (
        f"{os.sep}opentelemetry{os.sep}",
        f"{os.sep}contextlib.py",
    )
    """Path fragments of code that only leads into the profiler (span start/end plumbing)."""


PruneStep = Callable[[CallTreeNode, PruneOptions], CallTreeNode]


def iter_nodes(tree: CallTreeNode) -> Iterator[tuple[CallTreeNode, int]]:
    """Yield ``(node, depth)`` in pre-order (parent before children, children in order)."""
    stack: list[tuple[CallTreeNode, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in reversed(node.children))


def flatten(tree: CallTreeNode) -> list[dict[str, Any]]:
    """The tree as the brief's flat ``function_calls`` list, in pre-order.

    Keys: ``call_id`` (pre-order index as a string, root ``"0"``), ``parent_call_id``
    (``None`` for the root), ``depth`` (root 0), ``call_order`` (0-based index among its
    siblings; siblings are in order of first sample, i.e. roughly call order), ``duration``
    (total_time, seconds), ``function_name``, ``file_path``, ``line_number``.
    """
    rows: list[dict[str, Any]] = []
    stack: list[tuple[CallTreeNode, str | None, int, int]] = [(tree, None, 0, 0)]
    while stack:
        node, parent_id, depth, order = stack.pop()
        call_id = str(len(rows))
        rows.append(
            {
                "call_id": call_id,
                "parent_call_id": parent_id,
                "depth": depth,
                "call_order": order,
                "duration": node.total_time,
                "function_name": node.function,
                "file_path": node.file,
                "line_number": node.line,
            }
        )
        for index in range(len(node.children) - 1, -1, -1):
            stack.append((node.children[index], call_id, depth + 1, index))
    return rows


def copy_tree(tree: CallTreeNode) -> CallTreeNode:
    """A deep copy, so a pruning pass can run without touching the original."""
    root = _shallow_copy(tree)
    stack = [(tree, root)]
    while stack:
        source, target = stack.pop()
        for child in source.children:
            copied = _shallow_copy(child)
            target.children.append(copied)
            stack.append((child, copied))
    return root


def _shallow_copy(node: CallTreeNode) -> CallTreeNode:
    return CallTreeNode(
        node.function, node.file, node.line, node.total_time, node.self_time, node.sample_count
    )


# -- building ---------------------------------------------------------------------------


class _Builder:
    __slots__ = ("children", "class_time", "identifier", "samples", "self_time", "total")

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.children: dict[str, _Builder] = {}
        self.class_time: dict[str, float] = {}
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
    if not frame_records:
        return None
    root = _Builder("")
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
            link = _Builder(identifier)
            top_of_stem.children[identifier] = link
            top_of_stem = link
    _aggregate(frame_records, top_of_stem, skip)
    if stem:
        # The skipped stem is a single-child chain holding every sample.
        stem_node = root
        while stem_node is not top_of_stem:
            stem_node = next(iter(stem_node.children.values()))
            stem_node.total, stem_node.samples = top_of_stem.total, top_of_stem.samples
        root.total, root.samples = top_of_stem.total, top_of_stem.samples
    if root.samples == 0:
        return None
    top = root
    if len(root.children) == 1 and root.self_time == 0:
        top = next(iter(root.children.values()))
    top = _trim_stem(top, start_call_stack)
    return _to_nodes(top, min_share * top.total)


def _aggregate(
    frame_records: Sequence[tuple[Sequence[str], float]], base: _Builder, skip: int
) -> None:
    """Add the samples under ``base`` (each stack minus its first ``skip`` frames).

    Consecutive samples mostly share a long prefix of their stacks. Only the frames past
    the shared prefix are walked; a node on the current path accumulates its time, sample
    count and class time when it leaves the path, as the difference of running sums since
    it entered (exact, and the cost per sample is the part of the stack that changed).
    """
    path_nodes: list[_Builder] = []
    path_infos: list[str] = []
    path_enter: list[tuple[float, int, str | None]] = []
    elapsed_sum = 0.0
    count = 0
    parsed = _PARSED
    for stack, elapsed in frame_records:
        if type(stack) is not list:
            stack = list(stack)
        if skip:
            stack = stack[skip:]
        # Longest common prefix with the previous stack: binary search on C-level slice
        # comparisons (the strings are mostly the very same objects).
        low, high = 0, min(len(stack), len(path_infos))
        if stack[:high] == path_infos[:high]:
            low = high
        while low < high:
            middle = (low + high + 1) // 2
            if stack[:middle] == path_infos[:middle]:
                low = middle
            else:
                high = middle - 1
        for index in range(len(path_nodes) - 1, low - 1, -1):
            _leave(path_nodes[index], path_enter[index], elapsed_sum, count)
        del path_nodes[low:], path_infos[low:], path_enter[low:]
        node = path_nodes[-1] if path_nodes else base
        for frame_info in stack[low:]:
            info = parsed.get(frame_info)
            if info is None:
                info = _parsed_frame_info(frame_info)
            identifier, class_name = info
            child = node.children.get(identifier)
            if child is None:
                child = node.children[identifier] = _Builder(identifier)
            path_nodes.append(child)
            path_infos.append(frame_info)
            path_enter.append((elapsed_sum, count, class_name))
            node = child
        node.self_time += elapsed
        elapsed_sum += elapsed
        count += 1
    for index in range(len(path_nodes) - 1, -1, -1):
        _leave(path_nodes[index], path_enter[index], elapsed_sum, count)
    base.total += elapsed_sum
    base.samples += count


def _leave(
    node: _Builder, entered: tuple[float, int, str | None], elapsed_sum: float, count: int
) -> None:
    elapsed_then, count_then, class_name = entered
    spent = elapsed_sum - elapsed_then
    node.total += spent
    node.samples += count - count_then
    if class_name is not None:
        node.class_time[class_name] = node.class_time.get(class_name, 0.0) + spent


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


def _trim_stem(top: _Builder, start_call_stack: Sequence[str]) -> _Builder:
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


def _to_nodes(top: _Builder, min_total: float = 0.0) -> CallTreeNode:
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


def _node_from_builder(builder: _Builder) -> CallTreeNode:
    split = _SPLIT.get(builder.identifier)
    if split is None:
        if len(_SPLIT) >= _MAX_CACHED_FRAMES:
            _SPLIT.clear()
        split = _SPLIT[builder.identifier] = _split_identifier(builder.identifier)
    function, file, line = split
    if builder.class_time:
        class_time = builder.class_time
        if len(class_time) == 1:
            class_name = next(iter(class_time))
        else:
            class_name = max(class_time, key=class_time.__getitem__)
        function = f"{class_name}.{function}"
    return CallTreeNode(
        function=function,
        file=file,
        line=line,
        total_time=builder.total,
        self_time=builder.self_time,
        sample_count=builder.samples,
    )


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


# -- pruning steps ----------------------------------------------------------------------


def remove_profiler_frames(tree: CallTreeNode, options: PruneOptions) -> CallTreeNode:
    """Remove the span start/stop plumbing that leads into the profiler.

    A child whose whole subtree is "glue" (OpenTelemetry, contextlib, pyinstrument, this
    package) and reaches profiler code (pyinstrument or this package) is the cost of starting
    or stopping the profile: it is removed and its time becomes the parent's self time, so
    the request's total is unchanged. OpenTelemetry frames that lead back into application
    code (e.g. the WSGI middleware) stay.
    """
    paths = _paths_for(options)
    parents_first = _parents_first(tree)
    plumbing: set[int] = set()  # id() of nodes whose subtree is all glue and reaches profiler
    verdicts: dict[int, tuple[bool, bool]] = {}  # id(node) -> (all glue, reaches profiler)
    for node in reversed(parents_first):
        glue, profiler = paths.glue_verdict(node.file)
        for child in node.children:
            child_glue, child_profiler = verdicts[id(child)]
            glue = glue and child_glue
            profiler = profiler or child_profiler
        verdicts[id(node)] = (glue, profiler)
        if glue and profiler:
            plumbing.add(id(node))
    if plumbing:
        for node in parents_first:
            if any(id(child) in plumbing for child in node.children):
                node.self_time += sum(c.total_time for c in node.children if id(c) in plumbing)
                node.children = [c for c in node.children if id(c) not in plumbing]
    return tree


def collapse_library_frames(tree: CallTreeNode, options: PruneOptions) -> CallTreeNode:
    """Collapse runs of library frames, as pyinstrument's library-frame groups do.

    Inside a run of library frames (standard library, site-packages, built-ins) only the
    frame that entered the library, frames that call back into application code, leaves
    (e.g. ``socket.recv``, ``time.sleep``) and frames with a large self time
    (``options.library_self_share``) are kept. A removed frame's children move up to its
    parent (merged with same-function siblings) and its self time goes to the parent.
    """
    paths = _paths_for(options)
    significant = options.library_self_share * tree.total_time

    def removable(node: CallTreeNode) -> bool:
        return (
            bool(node.children)
            and paths.is_library(node.file)
            and all(paths.is_library(child.file) for child in node.children)
            and not (significant > 0 and node.self_time >= significant)
        )

    stack = [tree]
    while stack:
        node = stack.pop()
        if paths.is_library(node.file) and any(removable(c) for c in node.children):
            # Expand removable children down to the first frames that stay, in order.
            kept: list[CallTreeNode] = []
            pending = list(reversed(node.children))
            while pending:
                child = pending.pop()
                if removable(child):
                    node.self_time += child.self_time
                    pending.extend(reversed(child.children))
                else:
                    kept.append(child)
            node.children = []
            _add_children(node, kept)
        stack.extend(node.children)
    return tree


def fold_small_frames(tree: CallTreeNode, options: PruneOptions) -> CallTreeNode:
    """Fold frames below ``options.min_share`` of the root's total time into their parent.

    The folded subtree's time becomes the parent's self time (pyinstrument's
    ``remove_irrelevant_nodes`` absorbs it the same way), so totals are preserved.
    """
    threshold = options.min_share * tree.total_time
    if threshold <= 0:
        return tree
    for node, _depth in iter_nodes(tree):
        kept = []
        for child in node.children:
            if child.total_time < threshold:
                node.self_time += child.total_time
            else:
                kept.append(child)
        node.children = kept
    return tree


def limit_depth(tree: CallTreeNode, options: PruneOptions) -> CallTreeNode:
    """Cut the tree at ``options.max_depth``: deeper time becomes self time at that depth."""
    if options.max_depth is None:
        return tree
    for node, depth in iter_nodes(tree):
        if depth >= options.max_depth and node.children:
            node.self_time += sum(child.total_time for child in node.children)
            node.children = []
    return tree


DEFAULT_STEPS: tuple[PruneStep, ...] = (
    remove_profiler_frames,
    collapse_library_frames,
    fold_small_frames,
    limit_depth,
)


def prune(
    tree: CallTreeNode,
    options: PruneOptions | None = None,
    steps: Sequence[PruneStep] = DEFAULT_STEPS,
) -> CallTreeNode:
    """Run the pruning steps in order (mutating ``tree``) and return the result."""
    options = options or PruneOptions()
    for step in steps:
        tree = step(tree, options)
    return tree


# -- helpers ----------------------------------------------------------------------------


def _parents_first(tree: CallTreeNode) -> list[CallTreeNode]:
    """Every node, each before its descendants (reverse it for children first)."""
    order: list[CallTreeNode] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


@functools.lru_cache(maxsize=16)
def _paths_for(options: PruneOptions) -> _Paths:
    # A processor prunes every tree with the same options: keep the file verdicts.
    return _Paths(options)


class _Paths:
    """Classifies file paths under one set of options, caching per file (bounded)."""

    def __init__(self, options: PruneOptions) -> None:
        self._options = options
        self._library: dict[str, bool] = {}
        self._glue: dict[str, tuple[bool, bool]] = {}

    def glue_verdict(self, file: str) -> tuple[bool, bool]:
        """(is glue, is profiler code) for a file."""
        verdict = self._glue.get(file)
        if verdict is None:
            if len(self._glue) >= _MAX_CACHED_FRAMES:
                self._glue.clear()
            profiler = file.startswith(self._options.profiler_paths)
            glue = profiler or any(part in file for part in self._options.glue_fragments)
            verdict = self._glue[file] = (glue, profiler)
        return verdict

    def is_library(self, file: str) -> bool:
        verdict = self._library.get(file)
        if verdict is None:
            if len(self._library) >= _MAX_CACHED_FRAMES:
                self._library.clear()
            verdict = self._library[file] = self._classify_library(file)
        return verdict

    def _classify_library(self, file: str) -> bool:
        if file.startswith("<"):
            # <built-in>, <frozen ...>, <thread>; code typed at a prompt counts as the app's.
            return not (file in ("<string>", "<stdin>") or file.startswith("<ipython-input-"))
        prefixes = tuple(prefix for prefix in self._options.library_prefixes if prefix)
        return file.startswith(prefixes)


def _add_children(parent: CallTreeNode, children: Iterable[CallTreeNode]) -> None:
    """Append ``children`` to ``parent``, merging each into an existing child for the same
    function (times and samples add up: sibling subtrees never share samples)."""
    pending = [(parent, list(children))]
    while pending:
        target, incoming = pending.pop()
        index = {child.key: child for child in target.children}
        for child in incoming:
            same = index.get(child.key)
            if same is None:
                target.children.append(child)
                index[child.key] = child
                continue
            same.total_time += child.total_time
            same.self_time += child.self_time
            same.sample_count += child.sample_count
            pending.append((same, child.children))
