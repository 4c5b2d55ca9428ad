"""Per-request metrics summed from the child spans of a profiled entry span, plus memory.

Database spans are the ones with ``db.system`` (``db.system.name`` in newer conventions);
cache spans are those whose ``db.system`` is a cache (redis, memcached) or that carry a
``cache.hit`` boolean. Only spans that start in the entry span's context, in this process,
count (the processor registers them at start and adds them up when they end).

Memory, when tracked, is process-wide and cheap: resident set size (``/proc/self/statm``)
before and after the request for ``memory_delta``, and the process's peak RSS
(``getrusage(...).ru_maxrss``) for ``peak_memory``. No allocation tracing (tracemalloc slows
allocation-heavy code several times). Concurrent requests share the process, so the delta of
one request includes what the others allocated meanwhile.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from otel_pyinstrument_processor import attributes as attrs

CACHE_SYSTEMS = frozenset({"redis", "memcached", "valkey"})
_DB_SYSTEM = ("db.system", "db.system.name")

try:
    import resource as _resource
except ImportError:  # Windows
    _resource = None  # type: ignore[assignment]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# ru_maxrss is KiB on Linux, bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


# /proc/self/statm kept open (opening it is most of the cost); reopened in a forked child,
# where the inherited descriptor would still describe the parent.
_statm: tuple[int, int] | None = None  # (pid, fd)
_statm_lock = threading.Lock()
_COUNTERS_LOCK = threading.Lock()  # RequestMetrics' counters, all requests


def current_rss() -> int | None:
    """Resident set size of this process in bytes, or None where it cannot be read cheaply."""
    global _statm
    try:
        pid = os.getpid()
        statm = _statm
        if statm is None or statm[0] != pid:
            with _statm_lock:
                if _statm is None or _statm[0] != pid:
                    _statm = (pid, os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC))
                statm = _statm
        return int(os.pread(statm[1], 128, 0).split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss() -> int | None:
    """The process's peak resident set size in bytes, or None if unknown."""
    if _resource is None:
        return None
    return int(_resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss) * _MAXRSS_UNIT


class RequestMetrics:
    """Counters of one entry span, filled from its child spans (any thread).

    No ``__slots__``: the counters start as class-level zeros, so that making one per
    profiled request (most count no child span at all) sets two fields, not ten.
    """

    # One lock for every request's counters: a lock per request cost an allocation on
    # every profiled request, and the critical sections are a few additions long.
    lock = _COUNTERS_LOCK
    # Set when the framework counts queries itself (Django's execute_wrapper): database
    # child spans are then not counted a second time.
    queries_counted_by_app = False
    counted = False  # True once any counter below moved
    query_count = 0
    query_time = 0.0
    slow_queries = 0
    cache_hits = 0
    cache_misses = 0
    cache_time = 0.0
    rss_start: int | None = None
    slow_query_threshold = 0.1

    def __init__(self, *, track_memory: bool, slow_query_threshold: float = 0.1) -> None:
        self.slow_query_threshold = slow_query_threshold
        if track_memory:
            self.rss_start = current_rss()

    def add_span(
        self,
        attributes: Mapping[str, Any] | None,
        duration: float,
        *,
        track_sql: bool,
        track_cache: bool,
    ) -> None:
        """Count one ended child span if it is a database or cache operation."""
        if not attributes:
            return
        system = attributes.get(_DB_SYSTEM[0]) or attributes.get(_DB_SYSTEM[1])
        hit = attributes.get("cache.hit")
        is_cache = isinstance(hit, bool) or (isinstance(system, str) and system in CACHE_SYSTEMS)
        if is_cache:
            if not track_cache:
                return
            with self.lock:
                self.counted = True
                self.cache_time += duration
                if hit is True:
                    self.cache_hits += 1
                elif hit is False:
                    self.cache_misses += 1
            return
        if system is None or not track_sql or self.queries_counted_by_app:
            return
        self.add_query(duration)

    def add_query(self, duration: float) -> None:
        """Count one database query of ``duration`` seconds."""
        with self.lock:
            self.counted = True
            self.query_count += 1
            self.query_time += duration
            if duration >= self.slow_query_threshold:
                self.slow_queries += 1

    def add_span_attributes(self, values: dict[str, Any], *, track_memory: bool) -> None:
        """Add the ``pystrument.*`` metric attributes for the entry span to ``values``."""
        if self.counted:
            self._add_counters(values)
        if track_memory:
            end = current_rss()
            if end is not None and self.rss_start is not None:
                values[attrs.MEMORY_DELTA] = end - self.rss_start
            peak = peak_rss()
            if peak is not None:
                values[attrs.MEMORY_PEAK] = peak

    def _add_counters(self, values: dict[str, Any]) -> None:
        # Read under the lock, so that a child span ending on another thread right now is
        # counted whole or not at all.
        with self.lock:
            if self.query_count:
                values[attrs.DB_QUERY_COUNT] = self.query_count
                values[attrs.DB_QUERY_TIME] = self.query_time
                values[attrs.DB_SLOW_QUERIES] = self.slow_queries
            if self.cache_hits or self.cache_misses or self.cache_time:
                values[attrs.CACHE_HITS] = self.cache_hits
                values[attrs.CACHE_MISSES] = self.cache_misses
                values[attrs.CACHE_TIME] = self.cache_time
