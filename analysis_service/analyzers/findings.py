"""What a builtin rule returns: one finding (a `bottleneck_analysis` item, an optional
suggestion, the risks it implies), and the severity scale every rule shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis_service.inputs import is_app_code
from otel_pyinstrument_processor import CallTreeNode

# Frames that wait rather than compute: their time below an app function makes it I/O-bound.
BLOCKING_FRAMES = frozenset(
    {
        "sleep", "recv", "recv_into", "recvfrom", "read", "readinto", "readline", "select",
        "poll", "epoll", "wait", "acquire", "connect", "getaddrinfo", "sendall", "send",
        "urlopen", "request", "getresponse", "_blocking_io",
        # The sampling thread's pseudo-frame (profiler_mode sampler): the thread was off
        # the CPU, in a C call it cannot name (socket read, sleep, driver, lock).
        "[wait]",
    }
)  # fmt: skip
# pyinstrument's async-mode pseudo-frames: time a coroutine spent suspended, when the event
# loop was free to run other requests. Never blocking, whatever library frame is above it.
AWAIT_FRAMES = frozenset({"[await]", "[out-of-context]"})
# DB-API calls (and what OpenTelemetry's dbapi proxies wrap around them).
DB_DRIVER_FRAMES = frozenset(
    {"execute", "executemany", "fetchall", "fetchone", "fetchmany", "cursor", "callproc"}
)


@dataclass(slots=True)
class Finding:
    bottleneck: dict[str, Any]
    suggestion: dict[str, Any] | None = None
    risks: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    # False for findings that locate time already judged by another finding (the hot path):
    # they are reported but cost no score points, so one problem is not penalised twice.
    scored: bool = True


def severity_for(share: float) -> str:
    """critical from half the request's time, high from a quarter, medium from a tenth."""
    if share >= 0.5:
        return "critical"
    if share >= 0.25:
        return "high"
    if share >= 0.10:
        return "medium"
    return "low"


def time_in_frames(
    tree: CallTreeNode | None, frames: frozenset[str]
) -> dict[tuple[str, str, int], float]:
    """Per app function: seconds spent in library frames named in `frames` (and below them)
    charged to it."""
    out: dict[tuple[str, str, int], float] = {}
    if tree is None:
        return out
    stack: list[tuple[CallTreeNode, CallTreeNode | None]] = [(tree, None)]
    while stack:
        node, owner = stack.pop()
        if is_app_code(node.file):
            owner = node
        elif owner is not None and node.function.rsplit(".", 1)[-1] in frames:
            key = (owner.function, owner.file, owner.line)
            # asyncio.sleep is named `sleep` too: its suspended time is not blocking.
            spent = node.total_time if frames is AWAIT_FRAMES else node.total_time - _awaited(node)
            out[key] = out.get(key, 0.0) + spent
            continue
        stack.extend((child, owner) for child in node.children)
    return out


def _awaited(node: CallTreeNode) -> float:
    """Seconds below `node` spent suspended in an await (pyinstrument's `[await]` frames)."""
    if node.function in AWAIT_FRAMES:
        return node.total_time
    return sum(_awaited(child) for child in node.children)
