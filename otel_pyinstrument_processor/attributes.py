"""Every span attribute name pystrument reads or writes, in one place.

The receiver and storage side import these names instead of spelling the strings, so
renaming one is a wire-format change (see docs/wire-format.md).
"""

from __future__ import annotations

PROFILE_TREE = "pystrument.profile.tree"
"""str: the encoded call tree (see :func:`otel_pyinstrument_processor.decode_profile`)."""

PROFILE_FORMAT = "pystrument.profile.format"
"""str: how :data:`PROFILE_TREE` is encoded, version included: ``calltree/1;json+zlib+base64``."""

PROFILE_SAMPLE_COUNT = "pystrument.profile.sample_count"
"""int: number of stack samples taken while the span was profiled (pyinstrument's, or the
sampling thread's in sampler mode)."""

PROFILE_INTERVAL = "pystrument.profile.interval"
"""float: the configured sampling interval of the mode that profiled the span, in seconds."""

PROFILE_DURATION = "pystrument.profile.duration"
"""float: wall time the profiler ran, in seconds."""

PROFILE_TRUNCATED = "pystrument.profile.truncated"
"""bool: true when the size cap forced pruning beyond the configured thresholds."""

CPU_TIME = "pystrument.cpu_time"
"""float: CPU seconds consumed by the span's thread while profiled (``time.thread_time`` delta).

Absent when the span ended on another thread than the one it started on."""

PROFILE_REQUESTED = "pystrument.profile"
"""bool, set by the user at span start: ``True`` asks for profiling of a non-SERVER span,
``False`` opts a SERVER span out. Sampling still applies."""

PROFILE_STOPPED_EARLY = "pystrument.profile.stopped_early"
"""bool: the profile reached ``max_trace_duration`` and stopped recording samples."""

PROFILE_DROPPED_FAST = "pystrument.profile.dropped_fast"
"""bool: profiled, but shorter than the keep-if-slow threshold, so no tree was built."""

DB_QUERY_COUNT = "pystrument.db.query_count"
"""int: database child spans (``db.system``) of the entry span in this process."""

DB_QUERY_TIME = "pystrument.db.query_time"
"""float: their summed duration, seconds."""

DB_SLOW_QUERIES = "pystrument.db.slow_queries"
"""int: those at least ``slow_query_threshold`` long."""

CACHE_HITS = "pystrument.cache.hits"
"""int: cache child spans with ``cache.hit`` true."""

CACHE_MISSES = "pystrument.cache.misses"
"""int: cache child spans with ``cache.hit`` false."""

CACHE_TIME = "pystrument.cache.time"
"""float: summed duration of cache child spans, seconds."""

MEMORY_DELTA = "pystrument.memory.delta"
"""int: process RSS after minus before the request, bytes (process-wide; see docs)."""

MEMORY_PEAK = "pystrument.memory.peak"
"""int: the process's peak RSS when the request ended, bytes."""

ALL_ATTRIBUTES = (
    PROFILE_TREE,
    PROFILE_FORMAT,
    PROFILE_SAMPLE_COUNT,
    PROFILE_INTERVAL,
    PROFILE_DURATION,
    PROFILE_TRUNCATED,
    CPU_TIME,
    PROFILE_REQUESTED,
    PROFILE_STOPPED_EARLY,
    PROFILE_DROPPED_FAST,
    DB_QUERY_COUNT,
    DB_QUERY_TIME,
    DB_SLOW_QUERIES,
    CACHE_HITS,
    CACHE_MISSES,
    CACHE_TIME,
    MEMORY_DELTA,
    MEMORY_PEAK,
)
