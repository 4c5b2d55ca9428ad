"""Pruning a call tree: plain steps ``step(tree, options) -> tree``.

In the style of pyinstrument's ``processors.py``: each step says what it removes or merges
and why, and may mutate the tree it is given. Iterative throughout: real call stacks can be
as deep as the recursion limit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Sequence

import pyinstrument
from pyinstrument.session import Session

from otel_pyinstrument_processor.calltree import CallTreeNode, iter_nodes

_PACKAGE_DIR = os.path.dirname(__file__) + os.sep
_PYINSTRUMENT_DIR = os.path.dirname(pyinstrument.__file__) + os.sep
_MAX_CACHED_FILES = 50_000


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


def remove_profiler_frames(tree: CallTreeNode, options: PruneOptions) -> CallTreeNode:
    """Remove the span start/stop plumbing that leads into the profiler.

    A child whose whole subtree is "glue" (OpenTelemetry, contextlib, pyinstrument, this
    package) and reaches profiler code (pyinstrument or this package) is the cost of starting
    or stopping the profile: it is removed and its time becomes the parent's self time, so
    the request's total is unchanged. OpenTelemetry frames that lead back into application
    code (e.g. the WSGI middleware) stay.
    """
    glue_files = paths_for(options).glue
    parents_first = _parents_first(tree)
    # Plumbing reaches profiler code: most trees have none (a sample rarely falls in the
    # span's start or end), and then there is nothing to remove.
    if not any(glue_files[node.file][1] for node in parents_first):
        return tree
    plumbing: set[int] = set()  # id() of nodes whose subtree is all glue and reaches profiler
    verdicts: dict[int, tuple[bool, bool]] = {}  # id(node) -> (all glue, reaches profiler)
    for node in reversed(parents_first):
        glue, profiler = glue_files[node.file]
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
    library = paths_for(options).library
    significant = options.library_self_share * tree.total_time

    def removable(node: CallTreeNode) -> bool:
        children = node.children
        if not children or not library[node.file]:
            return False
        if significant > 0 and node.self_time >= significant:
            return False
        return all(library[child.file] for child in children)

    stack = [tree]
    while stack:
        node = stack.pop()
        if library[node.file] and any(removable(c) for c in node.children):
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


def _parents_first(tree: CallTreeNode) -> list[CallTreeNode]:
    """Every node, each before its descendants (reverse it for children first)."""
    order: list[CallTreeNode] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


_PATHS_BY_ID: dict[int, tuple[PruneOptions, FileVerdicts]] = {}


def paths_for(options: PruneOptions) -> FileVerdicts:
    """The file verdicts under ``options`` (kept per options object: dict lookups)."""
    # A processor prunes every tree with the same options object: keep the file verdicts,
    # found by identity first (hashing the options' tuples costs ~1 µs a step), then by
    # equality for callers that make equal options each time.
    entry = _PATHS_BY_ID.get(id(options))
    if entry is None or entry[0] is not options:
        if len(_PATHS_BY_ID) >= 16:
            _PATHS_BY_ID.clear()
        entry = _PATHS_BY_ID[id(options)] = (options, _equal_paths_for(options))
    return entry[1]


@functools.lru_cache(maxsize=16)
def _equal_paths_for(options: PruneOptions) -> FileVerdicts:
    return FileVerdicts(options)


class FileVerdicts:
    """Classifies file paths under one set of options; each verdict is a dict lookup after
    the first (bounded caches)."""

    def __init__(self, options: PruneOptions) -> None:
        self.library = _LibraryFiles(options)
        """file -> True when it is library code."""
        self.glue = _GlueFiles(options)
        """file -> (is glue, is profiler code)."""


class _LibraryFiles(dict[str, bool]):
    def __init__(self, options: PruneOptions) -> None:
        super().__init__()
        self._prefixes = tuple(prefix for prefix in options.library_prefixes if prefix)

    def __missing__(self, file: str) -> bool:
        if len(self) >= _MAX_CACHED_FILES:
            self.clear()
        if file.startswith("<"):
            # <built-in>, <frozen ...>, <thread>; code typed at a prompt counts as the app's.
            verdict = not (file in ("<string>", "<stdin>") or file.startswith("<ipython-input-"))
        else:
            verdict = file.startswith(self._prefixes)
        self[file] = verdict
        return verdict


class _GlueFiles(dict[str, tuple[bool, bool]]):
    def __init__(self, options: PruneOptions) -> None:
        super().__init__()
        self._options = options

    def __missing__(self, file: str) -> tuple[bool, bool]:
        if len(self) >= _MAX_CACHED_FILES:
            self.clear()
        profiler = file.startswith(self._options.profiler_paths)
        glue = profiler or any(part in file for part in self._options.glue_fragments)
        verdict = self[file] = (glue, profiler)
        return verdict


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
