"""The worker: N threads claiming jobs from the shared queue, one housekeeping thread that
renews leases, enforces time limits, requeues jobs of dead workers and enqueues schedule
ticks. Any number of workers, in any number of processes, share one queue.

`Worker(store).start()` ... `stop()`; or `run(stop_event)` to block. A job still running
at `stop()` keeps its lease until it ends or the timeout passes; after that its lease
expires and another worker retries it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from analysis_service.config import AnalysisSettings
from analysis_service.scheduling import enqueue_due_jobs
from analysis_service.tasks import HANDLERS, Handler, JobFailure, TaskContext
from storage_backend import Store, StoreError
from storage_backend.jobs import Job

logger = logging.getLogger(__name__)

SCHEDULE_CHECK_SECONDS = 30.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class _Running:
    job: Job
    started: float


class Worker:
    """Claims and runs jobs. Thread-safe start/stop; `handlers` maps job type to handler
    (default: `tasks.HANDLERS`)."""

    def __init__(
        self,
        store: Store,
        settings: AnalysisSettings | None = None,
        *,
        concurrency: int = 1,
        worker_id: str | None = None,
        handlers: dict[str, Handler] | None = None,
        schedule: bool = True,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.store = store
        self.settings = settings or AnalysisSettings()
        self.concurrency = concurrency
        self.worker_id = worker_id or default_worker_id()
        self.handlers = handlers if handlers is not None else HANDLERS
        self.schedule = schedule
        self.ctx = TaskContext(store, self.settings, self.worker_id)
        store.jobs.backoff_base_seconds = self.settings.retry_backoff_seconds
        self.processed = 0
        self._stop = threading.Event()
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.handlers)

    def start(self) -> None:
        """Start the claim threads and the housekeeping thread; returns at once."""
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._claim_loop, name=f"analyzer-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        self._threads.append(
            threading.Thread(target=self._housekeeping_loop, name="analyzer-leases", daemon=True)
        )
        for t in self._threads:
            t.start()
        logger.info("analysis worker %s started (%d slot(s), job types %s)",
                    self.worker_id, self.concurrency, ",".join(self.types))  # fmt: skip

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; wait up to `timeout` seconds for running jobs to finish."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        still = [r.job.id for r in self._running.values()]
        if still:
            logger.warning("stopped with job(s) %s still running: their leases will expire "
                           "and another worker retries them", still)  # fmt: skip
        logger.info("analysis worker %s stopped", self.worker_id)

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set."""
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    def run_once(self) -> bool:
        """Claim and run one job in this thread; False when none was due."""
        try:
            job = self.store.jobs.claim(self.worker_id, types=self.types,
                                        lease_seconds=self.settings.lease_seconds)  # fmt: skip
        except StoreError as exc:
            logger.warning("cannot claim jobs: %s", exc)
            return False
        if job is None:
            return False
        self._execute(job)
        return True

    def run_until_idle(self) -> int:
        """Run jobs in this thread until none is due; return how many ran (tests, tools)."""
        n = 0
        while self.run_once():
            n += 1
        return n

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_once():
                self._stop.wait(self.settings.poll_interval_seconds)

    def _execute(self, job: Job) -> None:
        with self._lock:
            self._running[job.id] = _Running(job, time.monotonic())
        queue = self.store.jobs
        try:
            handler = self.handlers.get(job.type)
            if handler is None:
                raise JobFailure(f"this worker has no handler for job type {job.type!r}")
            result = handler(self.ctx, job)
        except JobFailure as exc:
            self._record_failure(job, exc.reason, exc.retryable)
        except Exception as exc:
            logger.exception("job %s (%s) raised", job.id, job.type)
            self._record_failure(job, f"{type(exc).__name__}: {exc}", True)
        else:
            try:
                if not queue.complete(job.id, self.worker_id, result):
                    logger.warning("job %s finished after losing its lease; result dropped",
                                   job.id)  # fmt: skip
            except StoreError as exc:
                logger.warning("job %s: result not stored (%s); it will be retried", job.id, exc)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
            self.processed += 1

    def _record_failure(self, job: Job, reason: str, retryable: bool) -> None:
        try:
            state = self.store.jobs.fail(job.id, self.worker_id, reason, retryable=retryable)
        except StoreError as exc:
            logger.warning("job %s: failure not stored (%s)", job.id, exc)
            return
        logger.info("job %s (%s) attempt %d failed: %s -> %s",
                    job.id, job.type, job.attempts, reason, state or "lease lost")  # fmt: skip

    def _housekeeping_loop(self) -> None:
        interval = max(0.05, self.settings.lease_seconds / 3)
        next_schedule = 0.0
        while not self._stop.wait(interval):
            try:
                self._renew_leases()
                self.store.jobs.requeue_expired()
                if self.schedule and time.monotonic() >= next_schedule:
                    enqueue_due_jobs(self.store, self.settings)
                    next_schedule = time.monotonic() + SCHEDULE_CHECK_SECONDS
            except StoreError as exc:
                logger.warning("housekeeping: %s", exc)
        # Keep the leases of jobs still finishing during stop() alive until they end.
        while True:
            with self._lock:
                if not self._running:
                    return
            try:
                self._renew_leases()
            except StoreError as exc:
                logger.warning("housekeeping: %s", exc)
            time.sleep(interval)

    def _renew_leases(self) -> None:
        now = time.monotonic()
        with self._lock:
            running = list(self._running.values())
        for r in running:
            limit = min(r.job.time_limit, self.settings.time_limit_seconds)
            if now - r.started > limit:
                reason = f"time limit exceeded ({limit:g}s)"
                self.store.jobs.fail(r.job.id, self.worker_id, reason, retryable=False)
                with self._lock:
                    self._running.pop(r.job.id, None)
                logger.warning("job %s: %s", r.job.id, reason)
            elif not self.store.jobs.renew(r.job.id, self.worker_id, self.settings.lease_seconds):
                logger.warning("job %s: lease lost (taken over after expiry)", r.job.id)
