"""Project keys from request headers, resolved to projects with a short-lived cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from collector_receiver.errors import AuthenticationError
from storage_backend import Project
from storage_backend.projects import ProjectRepository, hash_key

KEY_HEADER = "x-pystrument-project-key"


def key_from_headers(headers: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The project key from `authorization: Bearer <key>` (as the collector's bearertokenauth
    sends it) or `x-pystrument-project-key`. Header names are case-insensitive."""
    for name, value in headers:
        lname = name.lower()
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if lname == "authorization":
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif lname == KEY_HEADER and text.strip():
            return text.strip()
    return None


class ProjectResolver:
    """Resolve keys to projects. Hits are cached for `ttl` seconds so an export costs no
    extra round trip; misses only briefly, so a new project works at once. A store outage
    surfaces as StoreUnavailableError (retryable), never as an authentication failure."""

    def __init__(self, projects: ProjectRepository, *, ttl: float = 30.0, miss_ttl: float = 2.0):
        self._projects = projects
        self._ttl = ttl
        self._miss_ttl = miss_ttl
        self._cache: dict[str, tuple[Project | None, float]] = {}
        self._lock = threading.Lock()

    def resolve(self, key: str | None) -> Project:
        if not key:
            raise AuthenticationError(
                f"missing project key: send 'authorization: Bearer <key>' or '{KEY_HEADER}: <key>'"
            )
        digest = hash_key(key)  # the cache never holds the key itself
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            project = cached[0]
        else:
            project = self._projects.find_by_key(key)
            expiry = now + (self._ttl if project else self._miss_ttl)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (project, expiry)
        if project is None:
            raise AuthenticationError("unknown or inactive project key")
        return project

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
