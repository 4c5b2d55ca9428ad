"""Projects and their keys. Keys are secrets: only a SHA-256 of each is stored.

A key is 256 bits from `secrets`, so a fast hash is enough (no password stretching is
needed against guessing); the display prefix lets people tell keys apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from datetime import datetime, timezone
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from storage_backend.errors import ProjectNameExistsError, ProjectNotFoundError, translate_errors
from storage_backend.models import AlertThreshold, Project, ProjectConfig
from storage_backend.schema import (
    AI_ANALYSIS_RESULTS,
    PERFORMANCE_RECORDS,
    PROJECTS,
    ROLLUPS,
    SPANS,
)

KEY_PREFIX = "psk_"
DISPLAY_PREFIX_LEN = 12
FRAMEWORKS = ("flask", "django", "fastapi", "other")
STATUSES = ("active", "inactive", "archived")
# A project's data, deleted with it.
_PROJECT_DATA = (PERFORMANCE_RECORDS, SPANS, ROLLUPS, AI_ANALYSIS_RESULTS)


def generate_key() -> str:
    """A new unguessable project key (256 random bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _config_from_doc(doc: dict[str, Any] | None) -> ProjectConfig:
    doc = dict(doc or {})
    threshold = AlertThreshold(**(doc.pop("alert_threshold", None) or {}))
    known = {f.name for f in dataclasses.fields(ProjectConfig)}
    return ProjectConfig(alert_threshold=threshold, **{k: v for k, v in doc.items() if k in known})


def project_from_doc(doc: dict[str, Any]) -> Project:
    return Project(
        id=doc["_id"],
        name=doc["name"],
        description=doc.get("description", ""),
        framework=doc.get("framework", "other"),
        status=doc.get("status", "active"),
        config=_config_from_doc(doc.get("config")),
        key_prefix=doc.get("key_prefix", ""),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        last_activity=doc.get("last_activity"),
        base_url=doc.get("base_url", ""),
    )


class ProjectRepository:
    """Create, find and list projects; resolve a presented key to its project."""

    def __init__(self, db: Database):
        self._db = db
        self._col: Collection = db[PROJECTS]

    def create(
        self,
        name: str,
        *,
        description: str = "",
        framework: str = "other",
        config: ProjectConfig | None = None,
        base_url: str = "",
    ) -> tuple[Project, str]:
        """Create a project; return it and its key. The key is not retrievable afterwards."""
        if not name or not name.strip():
            raise ValueError("project name must not be empty")
        key = generate_key()
        now = _now()
        doc = {
            "_id": "prj_" + secrets.token_hex(6),
            "name": name.strip(),
            "description": description,
            "framework": framework,
            "base_url": base_url,
            "status": "active",
            "config": dataclasses.asdict(config or ProjectConfig()),
            "key_hash": hash_key(key),
            "key_prefix": key[:DISPLAY_PREFIX_LEN],
            "created_at": now,
            "updated_at": now,
            "last_activity": None,
        }
        with translate_errors():
            try:
                self._col.insert_one(doc)
            except DuplicateKeyError as exc:
                raise ProjectNameExistsError(f"a project named {name!r} already exists") from exc
        return project_from_doc(doc), key

    def find_by_key(self, key: str) -> Project | None:
        """The active project this key belongs to, or None. Raises StoreUnavailableError."""
        if not key:
            return None
        with translate_errors():
            doc = self._col.find_one({"key_hash": hash_key(key), "status": "active"})
        return project_from_doc(doc) if doc else None

    def get(self, project_id: str) -> Project:
        with translate_errors():
            doc = self._col.find_one({"_id": project_id})
        if doc is None:
            raise ProjectNotFoundError(f"no project {project_id!r}")
        return project_from_doc(doc)

    def find_by_name(self, name: str) -> Project | None:
        with translate_errors():
            doc = self._col.find_one({"name": name})
        return project_from_doc(doc) if doc else None

    def list(self, *, skip: int = 0, limit: int = 100) -> list[Project]:
        with translate_errors():
            docs = self._col.find({}).sort("created_at", 1).skip(skip).limit(limit)
            return [project_from_doc(d) for d in docs]

    def count(self) -> int:
        with translate_errors():
            return self._col.count_documents({})

    def update(
        self,
        project_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        framework: str | None = None,
        base_url: str | None = None,
        status: str | None = None,
        config: ProjectConfig | None = None,
    ) -> Project:
        """Change the given fields (None leaves a field as it is); return the project.
        Raises ProjectNotFoundError, ProjectNameExistsError, ValueError (bad status/name)."""
        changes: dict[str, Any] = {}
        if name is not None:
            if not name.strip():
                raise ValueError("project name must not be empty")
            changes["name"] = name.strip()
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        for field, value in (
            ("description", description),
            ("framework", framework),
            ("base_url", base_url),
            ("status", status),
        ):
            if value is not None:
                changes[field] = value
        if config is not None:
            changes["config"] = dataclasses.asdict(config)
        changes["updated_at"] = _now()
        with translate_errors():
            try:
                doc = self._col.find_one_and_update(
                    {"_id": project_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError as exc:
                raise ProjectNameExistsError(f"a project named {name!r} already exists") from exc
        if doc is None:
            raise ProjectNotFoundError(f"no project {project_id!r}")
        return project_from_doc(doc)

    def delete(self, project_id: str) -> None:
        """Delete a project, its key and all its stored data."""
        with translate_errors():
            res = self._col.delete_one({"_id": project_id})
            if res.deleted_count == 0:
                raise ProjectNotFoundError(f"no project {project_id!r}")
            for collection in _PROJECT_DATA:
                self._db[collection].delete_many({"project_id": project_id})

    def rotate_key(self, project_id: str) -> str:
        """Replace a project's key; the old one stops working at once. Returns the new key."""
        key = generate_key()
        with translate_errors():
            res = self._col.update_one(
                {"_id": project_id},
                {
                    "$set": {
                        "key_hash": hash_key(key),
                        "key_prefix": key[:DISPLAY_PREFIX_LEN],
                        "updated_at": _now(),
                    }
                },
            )
        if res.matched_count == 0:
            raise ProjectNotFoundError(f"no project {project_id!r}")
        return key

    def touch_activity(self, project_id: str, when: datetime) -> None:
        """Record that data arrived for the project (monotonic: never moves back)."""
        with translate_errors():
            self._col.update_one({"_id": project_id}, {"$max": {"last_activity": when}})
