"""How long each kind of data is kept: per collection, from server config, per project.

Retention is enforced by TTL indexes on `expire_at` with `expireAfterSeconds=0` (schema.py):
each document carries its own expiry, computed when it is written, so projects can keep data
for different times and a changed setting applies to new data without rebuilding an index.
MongoDB's TTL monitor (and SecantusDB's) deletes expired documents within about a minute.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage_backend.models import Project

DEFAULT_RETENTION_DAYS = 30
"""The brief's default: performance data is kept 30 days."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days to keep performance records, spans and analysis results."""

    records_days: int = DEFAULT_RETENTION_DAYS
    spans_days: int = DEFAULT_RETENTION_DAYS
    analyses_days: int = DEFAULT_RETENTION_DAYS

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be >= 1, got {getattr(self, f.name)}")

    @classmethod
    def uniform(cls, days: int) -> RetentionPolicy:
        return cls(days, days, days)

    @property
    def records(self) -> timedelta:
        return timedelta(days=self.records_days)

    @property
    def spans(self) -> timedelta:
        return timedelta(days=self.spans_days)

    @property
    def analyses(self) -> timedelta:
        return timedelta(days=self.analyses_days)

    def for_project(self, project: Project) -> RetentionPolicy:
        """A project's `config.retention_days`, when set, overrides every collection's."""
        days = project.config.retention_days
        return RetentionPolicy.uniform(days) if days else self

    def analysis_expiry(self, project: Project, now: datetime) -> datetime:
        """The `expire_at` of an analysis result written `now` (for `ai_analysis_results`)."""
        return now + self.for_project(project).analyses
