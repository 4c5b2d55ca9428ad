"""What the processor did (counters) and how it complains (rate-limited warnings)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

_LOG_INTERVAL_SECONDS = 60.0


@dataclasses.dataclass
class ProcessorStats:
    """Counters of what the processor did; read them, don't write them."""

    profiles_started: int = 0
    profiles_attached: int = 0
    profiles_empty: int = 0
    """Profiled spans that ended before pyinstrument took a sample (metrics only, no tree)."""
    profiles_dropped_fast: int = 0
    """Profiled spans shorter than the keep-if-slow threshold (metrics only, no tree)."""
    profiles_stopped_early: int = 0
    """Profiles that reached ``max_trace_duration`` and stopped recording."""
    profiles_skipped_nested: int = 0
    profiles_dropped_oversize: int = 0
    profiles_dropped_cross_thread: int = 0
    errors: int = 0
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    def increment(self, counter: str) -> None:
        """Add one to ``counter`` (thread-safe)."""
        # The instance dict directly: setattr(getattr()) cost twice as much per request.
        counters = self.__dict__
        with self._lock:
            counters[counter] += 1

    def snapshot(self) -> dict[str, int]:
        """All counters as a dict."""
        with self._lock:
            return {
                field.name: getattr(self, field.name)
                for field in dataclasses.fields(self)
                if not field.name.startswith("_")
            }


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
