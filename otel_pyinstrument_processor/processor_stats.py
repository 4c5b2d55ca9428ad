"""What the processor did (counters) and how it complains (rate-limited warnings)."""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

_LOG_INTERVAL_SECONDS = 60.0


# next() on an itertools.count is one C call that the GIL does not interrupt: an exact
# counter without a lock (a lock round-trip per increment cost ~0.3 µs, twice per profiled
# request). A build without the GIL gets the lock back.
_NEXT_IS_ATOMIC = getattr(sys, "_is_gil_enabled", lambda: True)()

COUNTERS: dict[str, str] = {
    "profiles_started": "Spans whose profile was started.",
    "profiles_attached": "Profiled spans that carry a call tree.",
    "profiles_empty": "Profiled spans that ended before a sample was taken (metrics only, "
    "no tree).",
    "profiles_dropped_fast": "Profiled spans shorter than the keep-if-slow threshold (metrics "
    "only, no tree).",
    "profiles_stopped_early": "Profiles that reached ``max_trace_duration`` and stopped recording.",
    "profiles_skipped_nested": "SERVER spans inside a profiled span: not profiled again.",
    "profiles_dropped_oversize": "Trees too large for the span even after pruning harder.",
    "profiles_dropped_cross_thread": "pyinstrument-mode profiles whose span ended on another "
    "thread (its profiler cannot be stopped there).",
    "errors": "Failures inside the processor (counted, logged rate-limited, never raised).",
}
"""Every counter of :class:`ProcessorStats`, with what it counts."""


class _LockedCount:
    """An exact counter for builds where ``next(itertools.count())`` is not atomic."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def __next__(self) -> int:
        with self._lock:
            value = self._value
            self._value = value + 1
            return value

    def __repr__(self) -> str:
        return f"count({self._value})"


class ProcessorStats:
    """Counters of what the processor did (see :data:`COUNTERS`); read them as attributes
    (``stats.profiles_started``) or all at once with :meth:`snapshot`. Exact under
    threads, and no lock on the path that counts."""

    def __init__(self) -> None:
        make = itertools.count if _NEXT_IS_ATOMIC else _LockedCount
        self._counts: dict[str, Iterator[int]] = {name: make() for name in COUNTERS}

    def increment(self, counter: str) -> None:
        """Add one to ``counter`` (thread-safe; KeyError for an unknown counter)."""
        next(self._counts[counter])

    def counter(self, counter: str) -> Callable[[], int]:
        """A function that adds one to ``counter`` when called: for hot paths, one C call
        (KeyError for an unknown counter)."""
        return self._counts[counter].__next__

    def value(self, counter: str) -> int:
        """The current value of ``counter``."""
        # A count's repr is "count(N)", its next value: reading it takes nothing from it.
        return int(repr(self._counts[counter])[6:-1])

    def snapshot(self) -> dict[str, int]:
        """All counters as a dict."""
        return {name: self.value(name) for name in COUNTERS}

    def __getattr__(self, name: str) -> int:
        # Only for names that are not real attributes: the counters.
        if name in COUNTERS:
            return self.value(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value}" for name, value in self.snapshot().items())
        return f"ProcessorStats({values})"


class RateLimitedLog:
    """Logs the first message of each kind, then at most one per interval with a count."""

    def __init__(self, logger: logging.Logger, interval: float = _LOG_INTERVAL_SECONDS) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.warning(message, *args, exc_info=exc_info)
