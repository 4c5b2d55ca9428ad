"""One request's running profile: the context marker and its worker-thread samples.

The processor sets a :class:`ProfileMarker` in the request's context while it profiles the
request; code running in that context (child spans, worker threads that copied the context,
Django's SQL middleware) finds it with :func:`current_marker`.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER

from otel_pyinstrument_processor.request_metrics import RequestMetrics


class ProfileMarker:
    """What the context variable holds: a flag, the request's metrics and its worker-thread
    samples, never the span or the profiler, so a context that outlives its profile (the
    span ended elsewhere) keeps little alive."""

    __slots__ = (
        "active",
        "interval",
        "metrics",
        "thread_id",
        "use_timing_thread",
        "worker_records",
    )

    def __init__(
        self, metrics: RequestMetrics, interval: float, use_timing_thread: bool | None
    ) -> None:
        self.active = True
        self.metrics = metrics
        # How worker threads of this request are profiled (threadwork.py, pyinstrument).
        self.interval = interval
        self.use_timing_thread = use_timing_thread
        self.thread_id = threading.get_ident()
        # Samples from worker threads the request handed work to (see threadwork.py).
        self.worker_records: list[tuple[list[str], float]] = []


def current_marker() -> ProfileMarker | None:
    """The running profile of this context, if any (for code that profiles worker threads)."""
    marker = current_profile.get()
    return marker if marker is not None and marker.active else None


# One profiler per thread/async context: set while a span of this context is profiled.
current_profile: ContextVar[ProfileMarker | None] = ContextVar(
    "pystrument_current_profile", default=None
)


_THREADPOOL_MARKERS = ("run_in_threadpool", "run_sync", "to_thread")


def merge_worker_records(
    records: list[tuple[list[str], float]], worker: list[tuple[list[str], float]]
) -> list[tuple[list[str], float]]:
    """Put worker-thread samples where the request awaited them.

    The event-loop profile shows the request awaiting the threadpool as ``<await>`` samples
    under e.g. ``run_in_threadpool``; those samples are replaced by the worker's, grafted
    under the same awaiting stack, so the time appears once, as the worker's frames.
    """
    prefix: list[str] | None = None
    kept: list[tuple[list[str], float]] = []
    for stack, elapsed in records:
        if (
            stack
            and stack[-1] == AWAIT_FRAME_IDENTIFIER
            and any(marker in frame for frame in stack for marker in _THREADPOOL_MARKERS)
        ):
            if prefix is None:
                prefix = stack[:-1]
            continue
        kept.append((stack, elapsed))
    base = prefix or []
    kept.extend((base + stack, elapsed) for stack, elapsed in worker)
    return kept
