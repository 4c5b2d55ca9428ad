"""One request's running profile: the context marker and its worker-thread samples.

The processor sets a :class:`ProfileMarker` in the request's context while it profiles the
request; code running in that context (child spans, worker threads that copied the context,
Django's SQL middleware) finds it with :func:`current_marker`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextvars import ContextVar

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER

from otel_pyinstrument_processor.request_metrics import RequestMetrics, current_rss


class ProfileMarker(RequestMetrics):
    """What the context variable holds while a request is profiled: the request's metrics
    (the marker is the :class:`RequestMetrics` its child spans count into: one object per
    request, not two), whether it is still profiled, and its worker-thread samples; never
    the span or the profiler, so a context that outlives its profile (the span ended
    elsewhere) keeps little alive.

    A processor makes its markers from its own subclass (:meth:`configured`), whose class
    attributes hold its settings: a marker is made for every profiled request, and sets
    only its thread (and its starting RSS when memory is tracked).
    """

    active = True  # set False (on the instance) when the profile ends
    # How worker threads of this request are profiled (threadwork.py, pyinstrument).
    interval = 0.001
    use_timing_thread: bool | None = None
    track_memory = False
    # Samples from worker threads the request handed work to (see threadwork.py): a list
    # of the marker's own once there is one (add_worker_records).
    worker_records: Sequence[tuple[list[str], float]] = ()

    def __init__(self, thread_id: int | None = None) -> None:
        """A marker for a request on ``thread_id`` (``threading.get_ident()`` if None)."""
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        if self.track_memory:
            self.rss_start = current_rss()

    @classmethod
    def configured(
        cls,
        *,
        interval: float,
        use_timing_thread: bool | None,
        track_memory: bool,
        slow_query_threshold: float,
    ) -> type[ProfileMarker]:
        """A subclass whose markers have these settings (``interval`` and
        ``use_timing_thread``: how worker threads are profiled; the rest as for
        :class:`RequestMetrics`)."""
        return type(
            cls.__name__,
            (cls,),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "interval": interval,
                "use_timing_thread": use_timing_thread,
                "track_memory": track_memory,
                "slow_query_threshold": slow_query_threshold,
            },
        )

    @property
    def metrics(self) -> RequestMetrics:
        """The request's metrics: this marker itself."""
        return self

    def add_worker_records(self, records: Sequence[tuple[list[str], float]]) -> None:
        """Add samples taken on a worker thread of this request (any thread)."""
        with self.lock:  # the metrics' (shared) lock guards this list too
            if isinstance(self.worker_records, list):
                self.worker_records.extend(records)
            else:
                self.worker_records = list(records)


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
    records: list[tuple[list[str], float]], worker: Sequence[tuple[list[str], float]]
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
