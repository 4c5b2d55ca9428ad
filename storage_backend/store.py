"""The one handle on the database: connection, schema, repositories and the ingest write."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from storage_backend.analyses import AnalysisRepository
from storage_backend.auto_analysis import AutoAnalysisTrigger
from storage_backend.embedded import EmbeddedServer, default_data_dir
from storage_backend.errors import (
    InvalidDocumentError,
    StoreError,
    StoreUnavailableError,
    translate_errors,
)
from storage_backend.jobs import JobQueue
from storage_backend.models import IngestResult, Project, ResourceSpans
from storage_backend.pending_rollups import PendingRollups
from storage_backend.projects import ProjectRepository
from storage_backend.records import build_performance_records, build_span_documents
from storage_backend.retention import DEFAULT_RETENTION_DAYS, RetentionPolicy
from storage_backend.schema import PERFORMANCE_RECORDS, SPANS, ensure_indexes

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# Server codes for a document over the BSON size limit (BSONObjectTooLarge and kin).
_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})


@dataclass(slots=True)
class StoreSettings:
    """Where the data lives. With no `mongodb_url`, the embedded server is started."""

    mongodb_url: str | None = None
    database: str = "pystrument"
    data_dir: Path = field(default_factory=default_data_dir)
    retention_days: int = DEFAULT_RETENTION_DAYS
    # Per-collection overrides of retention_days (None: retention_days).
    records_retention_days: int | None = None
    spans_retention_days: int | None = None
    analyses_retention_days: int | None = None
    # How long an operation may wait for a server before the store counts as unavailable:
    # short, so an exporter gets a retryable answer well inside its own timeout.
    server_selection_timeout_ms: int = 3000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StoreSettings:
        """Read PYSTRUMENT_MONGODB_URL, PYSTRUMENT_MONGODB_DATABASE, PYSTRUMENT_DATA_DIR,
        PYSTRUMENT_RETENTION_DAYS."""
        env = os.environ if environ is None else environ
        settings = cls(mongodb_url=env.get("PYSTRUMENT_MONGODB_URL") or None)
        if env.get("PYSTRUMENT_MONGODB_DATABASE"):
            settings.database = env["PYSTRUMENT_MONGODB_DATABASE"]
        if env.get("PYSTRUMENT_DATA_DIR"):
            settings.data_dir = Path(env["PYSTRUMENT_DATA_DIR"]).expanduser()
        if env.get("PYSTRUMENT_RETENTION_DAYS"):
            raw = env["PYSTRUMENT_RETENTION_DAYS"]
            try:
                settings.retention_days = int(raw)
            except ValueError:
                raise ValueError(
                    f"PYSTRUMENT_RETENTION_DAYS must be an integer, got {raw!r}"
                ) from None
            if settings.retention_days < 1:
                raise ValueError(f"PYSTRUMENT_RETENTION_DAYS must be >= 1, got {raw!r}")
        for kind in ("records", "spans", "analyses"):
            raw = env.get(f"PYSTRUMENT_{kind.upper()}_RETENTION_DAYS")
            if raw:
                try:
                    days = int(raw)
                except ValueError:
                    days = 0
                if days < 1:
                    raise ValueError(
                        f"PYSTRUMENT_{kind.upper()}_RETENTION_DAYS must be an integer >= 1, "
                        f"got {raw!r}"
                    )
                setattr(settings, f"{kind}_retention_days", days)
        return settings

    def retention_policy(self) -> RetentionPolicy:
        """Days per collection; raises ValueError for a value below 1."""
        return RetentionPolicy(
            records_days=self.records_retention_days or self.retention_days,
            spans_days=self.spans_retention_days or self.retention_days,
            analyses_days=self.analyses_retention_days or self.retention_days,
        )


class Store:
    """A connected database with the schema in place. Create with `Store.open()` or directly."""

    def __init__(
        self,
        client: MongoClient,
        database: str = "pystrument",
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        retention_policy: RetentionPolicy | None = None,
        embedded: EmbeddedServer | None = None,
    ):
        self.client = client
        self.db: Database = client[database]
        self.retention_policy = retention_policy or RetentionPolicy.uniform(retention_days)
        self.retention = self.retention_policy.records
        self.embedded = embedded
        self.projects = ProjectRepository(self.db)
        self.jobs = JobQueue(self.db)
        self.analyses = AnalysisRepository(self.db)
        self.auto_analysis = AutoAnalysisTrigger(self.jobs)
        self.pending_rollups = PendingRollups()

    @classmethod
    def connect(
        cls,
        url: str,
        database: str = "pystrument",
        *,
        server_selection_timeout_ms: int = 3000,
        **kwargs: Any,
    ) -> Store:
        """Connect to any MongoDB URL (pymongo connects lazily; call `ping()` to check)."""
        client: MongoClient = MongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=server_selection_timeout_ms,
            appname="pystrument",
        )  # fmt: skip
        return cls(client, database, **kwargs)

    @classmethod
    def open(cls, settings: StoreSettings | None = None) -> Store:
        """Connect as configured, starting the embedded server first when no URL is set;
        ensure indexes. `close()` stops what `open()` started."""
        settings = settings or StoreSettings.from_env()
        embedded = None
        url = settings.mongodb_url
        if not url:
            embedded = EmbeddedServer(settings.data_dir / "mongo")
            embedded.start()
            url = embedded.url
        try:
            store = cls.connect(
                url,
                settings.database,
                server_selection_timeout_ms=settings.server_selection_timeout_ms,
                retention_policy=settings.retention_policy(),
                embedded=embedded,
            )
            store.ensure_schema()
        except BaseException:
            if embedded:
                embedded.stop()
            raise
        return store

    @property
    def url(self) -> str:
        """The URL to show people (the embedded server's, or the configured host list)."""
        if self.embedded:
            return self.embedded.url
        host, port = self.client.address or ("?", "?")
        return f"mongodb://{host}:{port}"

    def collection(self, name: str) -> Collection:
        return self.db[name]

    def ensure_schema(self) -> None:
        ensure_indexes(self.db)
        self.jobs.ensure_indexes()
        self.analyses.ensure_indexes()

    def ping(self) -> None:
        """Raise StoreUnavailableError unless the server answers."""
        with translate_errors():
            self.client.admin.command("ping")

    def ingest(self, project: Project, batch: Sequence[ResourceSpans]) -> IngestResult:
        """Store a batch of spans for a project: every span into `spans` (one document per
        resource) and one `performance_records` document per entry span.

        Returns only once both writes are acknowledged. Idempotent: retrying after a failure
        (StoreUnavailableError) stores nothing twice.
        """
        return self.ingest_many([(project, batch)])[0]

    def ingest_many(
        self,
        items: Sequence[tuple[Project, Sequence[ResourceSpans]]],
        *,
        rollups_can_wait: Callable[[], bool] | None = None,
    ) -> list[IngestResult]:
        """Store many (project, batch) items with one `insert_many` per collection (the
        receiver's group commit): the one write path of ingested spans.

        Returns one IngestResult per item, in order, only once every write is acknowledged;
        raises StoreError (nothing is then acknowledged, though some documents may be
        written: a retry skips them, the `_id`s being deterministic).

        `rollups_can_wait`, asked after the records are written, lets their rollup counts
        join a later write's (see pending_rollups.py): the group-commit writer answers True
        while more writes are queued behind this one. Without it the counts are written now.
        """
        now = datetime.now(timezone.utc)
        span_docs: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        results: list[IngestResult] = []
        for project, batch in items:
            keep = self.retention_policy.for_project(project)
            item_spans = build_span_documents(
                project.id, batch, retention=keep.spans, received_at=now
            )
            item_records = build_performance_records(
                project.id, batch, retention=keep.records, received_at=now
            )
            span_docs += item_spans
            records += item_records
            results.append(
                IngestResult(
                    spans=sum(d["span_count"] for d in item_spans),
                    span_documents=len(item_spans),
                    performance_records=len(item_records),
                )
            )
        self._insert_idempotent(SPANS, span_docs)
        # Rollups and auto-analysis see only what this call wrote, so a retry counts nothing twice.
        written = self._insert_idempotent(PERFORMANCE_RECORDS, records)
        self.pending_rollups.add(written)
        if rollups_can_wait is None or not rollups_can_wait() or self.pending_rollups.due():
            self.pending_rollups.flush(self.db)
        self.auto_analysis.on_records_stored([project for project, _ in items], written)
        return results

    def insert_new(self, collection: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert documents with deterministic `_id`s, skipping those already stored (a
        client's retry); return the ones this call wrote."""
        return self._insert_idempotent(collection, docs)

    def _insert_idempotent(
        self, collection: str, docs: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Insert `docs`, skipping those already stored; return the ones this call wrote."""
        if not docs:
            return []
        with translate_errors():
            try:
                self.db[collection].insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
                too_large = [e.get("errmsg", "")[:200] for e in others
                             if e.get("code") in _TOO_LARGE_CODES]  # fmt: skip
                if too_large:
                    # The data can never be stored as it is: permanent, not a retry case.
                    raise InvalidDocumentError(f"{collection}: {too_large[0]}") from exc
                if others or exc.details.get("writeConcernErrors"):
                    raise StoreError(f"bulk write to {collection} failed: {others[:3]}") from exc
                logger.debug("%d already-stored documents skipped in %s", len(errors), collection)
                skipped = {e.get("index") for e in errors}
                return [d for i, d in enumerate(docs) if i not in skipped]
        return docs

    def flush_rollups(self) -> None:
        """Write the rollup counts that `ingest_many` let wait (the receiver calls this when
        it stops); raises StoreError."""
        self.pending_rollups.flush(self.db)

    def close(self) -> None:
        """Close the client and stop the embedded server if this store started it (rollup
        counts still waiting are written first, if the store takes them)."""
        try:
            self.flush_rollups()
        except StoreError as exc:
            logger.warning("waiting rollup counts not written at close: %s", exc)
        self.client.close()
        if self.embedded:
            self.embedded.stop()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Store", "StoreSettings", "StoreUnavailableError"]
