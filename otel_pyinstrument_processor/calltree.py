"""The call tree of one profiled span: its node type and the walks over it.

The tree is aggregated (like pyinstrument's default view): every distinct call path appears
once, children in the order they were first sampled. It is built from sampled stacks in
:mod:`tree_builder` and pruned in :mod:`pruning`. Every algorithm here is iterative, because
real call stacks can be as deep as the recursion limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any


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
