"""Which entry spans get profiled: path rules, per-route rates and a profiles-per-second cap.

Decided once, at span start, from the attributes the HTTP instrumentations set when they
start the server span (``url.path``, else ``http.target``, else ``http.route``). The order:
excluded paths, include patterns, the route's rate (first matching pattern) or the default
rate, then the cap. The cap is consulted last so that requests which would not be profiled
anyway do not use up its budget.
"""

from __future__ import annotations

import fnmatch
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

# Attribute names, newest semantic conventions first.
_PATH_ATTRIBUTES = ("url.path", "http.target", "http.route")


def request_path(attributes: Mapping[str, Any] | None, span_name: str = "") -> str | None:
    """The request path of a server span at start (query string removed), or None."""
    if attributes:
        for name in _PATH_ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, str) and value:
                return value.split("?", 1)[0]
    # "GET /api/users" (span names of HTTP server spans) -> "/api/users"
    _, _, rest = span_name.partition(" ")
    return rest if rest.startswith("/") else None


class ProfileBudget:
    """A token bucket: at most ``per_second`` profiles per second, bursts up to
    ``max(1, per_second)``. Thread-safe; ``take`` costs one lock round-trip."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be > 0, got {per_second!r}")
        self._rate = float(per_second)
        self._capacity = max(1.0, self._rate)
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Use one token if there is one."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


class SamplingPolicy:
    """Decides, per entry span, whether to profile it. Patterns are shell globs on the path
    (``/api/reports/*``); ``excluded_paths`` and ``include_patterns`` also match as plain
    prefixes (``/static`` excludes ``/static/app.css``), as the seed's settings did."""

    def __init__(
        self,
        *,
        sampling_rate: float = 1.0,
        route_sampling_rates: Mapping[str, float] | None = None,
        excluded_paths: Sequence[str] = (),
        include_patterns: Sequence[str] = (),
        max_profiles_per_second: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sampling_rate = float(sampling_rate)
        self._routes = [
            (re.compile(fnmatch.translate(pattern)), float(rate))
            for pattern, rate in (route_sampling_rates or {}).items()
        ]
        self._excluded = _PathMatcher(excluded_paths)
        self._included = _PathMatcher(include_patterns) if include_patterns else None
        self._budget = ProfileBudget(max_profiles_per_second) if max_profiles_per_second else None
        self._random = rng or random.Random()
        # The common case (no path rules) must not pay for path extraction.
        self._needs_path = bool(self._routes or excluded_paths or include_patterns)
        self.profiles_every_span = (
            self.sampling_rate >= 1.0 and not self._needs_path and self._budget is None
        )
        """True when :meth:`should_profile` would say yes to every span (rate 1.0, no path
        rule, no cap): callers on a hot path may skip the call."""

    def should_profile(self, attributes: Mapping[str, Any] | None, span_name: str) -> bool:
        """True if this entry span is to be profiled (uses a budget token if so)."""
        rate = self.sampling_rate
        if self._needs_path:
            path = request_path(attributes, span_name)
            if path is not None:
                if self._excluded.matches(path):
                    return False
                if self._included is not None and not self._included.matches(path):
                    return False
                for pattern, route_rate in self._routes:
                    if pattern.match(path):
                        rate = route_rate
                        break
            elif self._included is not None:
                return False  # not a request we can place: include-only means skip it
        if rate <= 0.0 or (rate < 1.0 and self._random.random() >= rate):
            return False
        return self._budget is None or self._budget.take()


class _PathMatcher:
    def __init__(self, patterns: Sequence[str]) -> None:
        globs = [p for p in patterns if any(ch in p for ch in "*?[")]
        self._prefixes = tuple(p for p in patterns if p not in globs)
        self._globs = [re.compile(fnmatch.translate(p)) for p in globs]

    def matches(self, path: str) -> bool:
        return path.startswith(self._prefixes) or any(g.match(path) for g in self._globs)
