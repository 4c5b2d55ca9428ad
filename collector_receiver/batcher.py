"""Group commit: concurrent Export calls share bulk writes, with a bound on spans in flight.

Each export is admitted (its spans counted against `max_inflight_spans`), decoded, queued,
and waits. A few writer threads take everything queued (up to `max_batch_spans`) and store it
with ONE `Store.ingest_many` call, then wake the callers: a caller returns only after its
spans are acknowledged by the store, so a success still means stored. The queue never grows
past the bound: an export that does not fit waits up to `admission_wait_seconds` for room
(a write finishing frees its spans), then is refused with OverloadedError (gRPC
RESOURCE_EXHAUSTED with RetryInfo / HTTP 429 with Retry-After), which OTLP clients retry.
The short wait is backpressure without a round trip: refused at once, an exporter sleeps
its retry hint (a second) while the store may sit idle; waiting, it is admitted the moment a
write ends. What waits is bounded by the transports' handler threads.

No linger timer: when the writers are idle a lone request is written at once; under load the
requests that arrive during one write form the next batch, so batches grow with the load.
Rollup counts follow the same idea: a group write with more queued behind it leaves its
records' counts to the next one (storage_backend/pending_rollups.py; at most ~1 s).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from collector_receiver.errors import OverloadedError, ShuttingDownError
from collector_receiver.metrics import ReceiverMetrics
from storage_backend import (
    IngestResult,
    InvalidDocumentError,
    Project,
    ResourceSpans,
    Store,
    StoreError,
)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchOptions:
    """Limits of the group-commit writer (settings `ingest_*`)."""

    max_inflight_spans: int = 100_000
    max_batch_spans: int = 10_000
    writers: int = 2
    retry_after_seconds: float = 1.0
    admission_wait_seconds: float = 0.5


@dataclass(slots=True)
class _Pending:
    project: Project
    batch: Sequence[ResourceSpans]
    spans: int
    future: Future[IngestResult]


class GroupCommitWriter:
    """Bounded queue + writer threads in front of `Store.ingest_many` (see module doc)."""

    def __init__(
        self,
        store: Store,
        options: BatchOptions | None = None,
        metrics: ReceiverMetrics | None = None,
    ):
        self._store = store
        self.options = options or BatchOptions()
        self._metrics = metrics or ReceiverMetrics()
        self._metrics.inflight_spans.read = lambda: self.inflight_spans
        self._queue: deque[_Pending] = deque()
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # the queue has items, or closing
        self._room = threading.Condition(lock)  # admitted spans were released, or closing
        self._inflight = 0
        self._closing = False
        self._threads: list[threading.Thread] = []

    @property
    def inflight_spans(self) -> int:
        """Spans admitted and not yet answered."""
        return self._inflight

    @property
    def closing(self) -> bool:
        """True once `close()` was called: new exports are refused as retryable."""
        return self._closing

    @property
    def queued_requests(self) -> int:
        """Exports decoded and waiting for the next group write."""
        return len(self._queue)

    @contextlib.contextmanager
    def admission(self, spans: int) -> Iterator[None]:
        """Reserve room for `spans` for the duration of the block (decode + write), waiting
        up to `admission_wait_seconds` for it, else raise OverloadedError; ShuttingDownError
        once closing. A request larger than the whole bound is admitted alone when nothing
        else is in flight, so it can never be refused forever."""
        limit = self.options.max_inflight_spans
        deadline: float | None = None
        with self._cond:
            while True:
                if self._closing:
                    raise ShuttingDownError("the receiver is shutting down; retry")
                if not self._inflight or self._inflight + spans <= limit:
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.options.admission_wait_seconds
                if now >= deadline:
                    raise OverloadedError(
                        f"receiver busy: {self._inflight} spans in flight "
                        f"(limit {limit}); retry later",
                        self.options.retry_after_seconds,
                    )
                self._room.wait(deadline - now)
            self._inflight += spans
        try:
            yield
        finally:
            with self._cond:
                self._inflight -= spans
                self._room.notify_all()

    def write(self, project: Project, batch: Sequence[ResourceSpans]) -> IngestResult:
        """Store `batch` as part of the next group write and return once it is acknowledged;
        raises the store's error (StoreError) if that write failed."""
        spans = sum(len(group.spans) for group in batch)
        pending = _Pending(project, batch, spans, Future())
        with self._cond:
            if self._closing and not self._threads:
                raise ShuttingDownError("the receiver is shutting down; retry")
            self._ensure_started()
            self._queue.append(pending)
            self._cond.notify()
        return pending.future.result()

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new admissions, write everything already queued, stop the writers."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._room.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self._store.flush_rollups()
        except StoreError as exc:  # the records are stored; only their counts are missing
            logger.warning("rollup counts not written at shutdown: %s", exc)
        with self._cond:
            self._threads = [t for t in self._threads if t.is_alive()]
            # Anything still queued (writers stuck past the timeout) is answered, not dropped
            # silently: the client retries elsewhere.
            while self._queue and not self._threads:
                self._queue.popleft().future.set_exception(
                    ShuttingDownError("the receiver stopped before writing; retry")
                )

    def _ensure_started(self) -> None:
        # Threads start on first use: importing or building a receiver starts nothing.
        if self._threads:
            return
        for i in range(self.options.writers):
            thread = threading.Thread(target=self._run, name=f"ingest-writer-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            taken = [self._queue.popleft()]
            spans = taken[0].spans
            while self._queue and spans + self._queue[0].spans <= self.options.max_batch_spans:
                item = self._queue.popleft()
                spans += item.spans
                taken.append(item)
            return taken

    def _more_queued(self) -> bool:
        # Another group write will follow at once: it can carry this one's rollup counts.
        return bool(self._queue)

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            self._commit(taken)

    def _commit(self, taken: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = self._store.ingest_many(
                [(p.project, p.batch) for p in taken], rollups_can_wait=self._more_queued
            )
        except InvalidDocumentError as exc:
            if len(taken) == 1:
                taken[0].future.set_exception(exc)
                return
            # One request's bad document must not fail its neighbours: write them one by one.
            for item in taken:
                self._commit([item])
            return
        except BaseException as exc:  # every waiting caller gets the failure, none hangs
            for item in taken:
                item.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._metrics.write_latency.observe(time.perf_counter() - started)
        self._metrics.batch_spans.observe(sum(p.spans for p in taken))
        self._metrics.batch_requests.observe(len(taken))
        for item, result in zip(taken, results, strict=True):
            item.future.set_result(result)
