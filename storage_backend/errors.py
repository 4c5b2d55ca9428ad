"""Storage errors, classified so callers can answer retryable vs. permanent without pymongo."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pymongo import errors as mongo_errors


class StoreError(Exception):
    """Base class for storage failures."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached or cannot take writes now; retrying later can succeed."""


class InvalidDocumentError(StoreError):
    """The data itself cannot be stored (too large, malformed); retrying cannot succeed."""


class ProjectNameExistsError(StoreError):
    """A project with this name already exists."""


class ProjectNotFoundError(StoreError):
    """No project with this id."""


# Server error codes that mean "not now" rather than "never": not primary, shutting down,
# interrupted, write concern failures. See mongo's error_codes.yml.
_TRANSIENT_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 64, 100}
)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise pymongo errors as StoreUnavailableError / InvalidDocumentError / StoreError."""
    try:
        yield
    except (mongo_errors.ConnectionFailure, mongo_errors.WaitQueueTimeoutError) as exc:
        raise StoreUnavailableError(f"store unreachable: {exc}") from exc
    except mongo_errors.DocumentTooLarge as exc:
        raise InvalidDocumentError(f"document too large: {exc}") from exc
    except mongo_errors.OperationFailure as exc:
        if exc.code in _TRANSIENT_CODES or exc.has_error_label("RetryableWriteError"):
            raise StoreUnavailableError(f"store refused the operation for now: {exc}") from exc
        raise StoreError(f"store operation failed: {exc}") from exc
    except mongo_errors.PyMongoError as exc:
        raise StoreError(f"store error: {exc}") from exc
