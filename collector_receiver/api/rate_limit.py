"""Per-caller rate limiting of the REST API (error code 10004, HTTP 429 with Retry-After).

Each caller has a token bucket: it holds up to `burst` tokens, refills at `per_second`
tokens a second, and every `/api/` request takes one. An empty bucket answers
`{"code": 10004, ...}` with `Retry-After` (whole seconds until a token is back).

Who "a caller" is (`caller_identity`):
- the admin token -> one bucket, `admin`;
- a project key -> its project's bucket, `project:<id>` (so a project's callers share one
  bucket whichever header they send the key in); if the store cannot resolve it right now,
  the key's SHA-256, never the key itself;
- no key, or an unknown one -> the client address, `address:<host>` (so inventing keys
  does not buy fresh buckets).

Only `/api/` paths are limited: OTLP `/v1/traces` has its own backpressure (in-flight
bytes and spans), and `/health`, `/ready`, `/metrics` must answer probes and scrapers.
Memory is bounded: a bucket idle long enough to have refilled is the same as no bucket and
is dropped, and beyond `max_buckets` the least recently used ones go.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from collector_receiver.api.envelope import API_PREFIX, HTTP_STATUS, ErrorCode
from collector_receiver.auth import key_from_headers
from collector_receiver.errors import AuthenticationError
from storage_backend import StoreError
from storage_backend.projects import hash_key

logger = logging.getLogger(__name__)

DEFAULT_MAX_BUCKETS = 10_000


class TokenBuckets:
    """Thread-safe token buckets keyed by caller identity. `per_second <= 0` disables
    limiting (`take` always admits)."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.per_second = max(0.0, float(per_second))
        # A burst below one token would refuse everything; at least one request passes.
        self.burst = max(1.0, float(burst))
        self.max_buckets = max(1, max_buckets)
        self._clock = clock
        # identity -> (tokens, time of last update); oldest-touched first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def take(self, identity: str) -> float:
        """Take one token for `identity`. Returns 0.0 if admitted, else the seconds until
        a token is available (the request is refused and nothing is taken)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(identity, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.per_second)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.per_second
            self._buckets[identity] = (tokens, now)  # re-inserted last: most recent
            self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        # Oldest first: a bucket idle for burst/per_second seconds is full again, which is
        # what a missing bucket means, so dropping it changes nothing for its caller.
        refill_seconds = self.burst / self.per_second
        while self._buckets:
            identity, (_tokens, last) = next(iter(self._buckets.items()))
            if now - last >= refill_seconds or len(self._buckets) > self.max_buckets:
                del self._buckets[identity]
            else:
                break

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


def caller_identity(
    headers: list[tuple[bytes, bytes]],
    client_host: str,
    admin_token: str | None,
    resolve_project_id: Callable[[str], str],
) -> str:
    """The bucket a request is charged to (see the module docstring). `resolve_project_id`
    maps a key to its project id and raises AuthenticationError for an unknown key; it may
    block on the store."""
    # ASGI header names are bytes; key_from_headers compares text names.
    presented = key_from_headers((name.decode("latin-1"), value) for name, value in headers)
    if not presented:
        return f"address:{client_host}"
    if admin_token and hmac.compare_digest(presented.encode(), admin_token.encode()):
        return "admin"
    try:
        return f"project:{resolve_project_id(presented)}"
    except AuthenticationError:
        return f"address:{client_host}"
    except StoreError:
        # The handler will answer 10005; still limit the caller, by its key's digest.
        return f"key:{hash_key(presented)}"


class ApiRateLimit:
    """ASGI middleware: `TokenBuckets` in front of every `/api/` path of the app.

    Add it with `app.add_middleware(ApiRateLimit, per_second=..., burst=...)`. It reads the
    admin token from `app.state.admin_token` and resolves keys through the ingestor's cached
    `ProjectResolver` (`app.state.ingestor.resolver`), so a limited request costs no extra
    store round trip once its key is cached."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_second: float,
        burst: int,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ):
        self.app = app
        self.buckets = TokenBuckets(per_second, burst, max_buckets=max_buckets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.buckets.enabled
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        client = scope.get("client")
        client_host = client[0] if client else "unknown"

        def resolve_project_id(key: str) -> str:
            return state.ingestor.resolver.resolve(key).id

        # The resolver may query the store: off the event loop.
        identity = await anyio.to_thread.run_sync(
            caller_identity,
            list(scope["headers"]),
            client_host,
            getattr(state, "admin_token", None),
            resolve_project_id,
        )
        wait = self.buckets.take(identity)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        logger.debug("rate limited %s on %s", identity.partition(":")[0], scope["path"])
        await _send_rate_limited(send, wait)


async def _send_rate_limited(send: Send, wait: float) -> None:
    retry_after = max(1, math.ceil(wait))  # Retry-After takes whole seconds
    body: dict[str, Any] = {
        "code": int(ErrorCode.RATE_LIMIT_ERROR),
        "msg": f"rate limit exceeded, retry in {retry_after} s",
        "data": None,
    }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": HTTP_STATUS[ErrorCode.RATE_LIMIT_ERROR],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
