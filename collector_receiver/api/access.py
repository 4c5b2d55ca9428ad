"""Who is calling the REST API, and what they may see.

Callers authenticate with a header, never with a secret in the URL (URLs end up in access
logs, browser history and proxies):

- the admin token (`PYSTRUMENT_ADMIN_TOKEN`) as `Authorization: Bearer <token>`: manages
  projects and reads every project's data;
- a project key, as `Authorization: Bearer <key>` or `X-Pystrument-Project-Key: <key>`
  (the headers the OTLP receiver takes): reads its own project's data and pushes records.

Paths name projects by id (`prj_...`), which is not a secret. Missing credentials -> 10002,
an unknown key -> 20003, a valid caller outside its rights -> 10003.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from collector_receiver.api.envelope import ApiError, ErrorCode
from collector_receiver.auth import KEY_HEADER, key_from_headers
from storage_backend import Project, Store


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the admin, or the holder of one project's key."""

    is_admin: bool
    project: Project | None = None

    def require_admin(self) -> None:
        """Raise 10003 unless the caller is the admin."""
        if not self.is_admin:
            raise ApiError(ErrorCode.PERMISSION_ERROR, "this operation needs the admin token")

    def require_project(self, project_id: str) -> None:
        """Raise 10003 unless the caller may read `project_id` (admin, or its own key)."""
        if self.is_admin:
            return
        if self.project is None or self.project.id != project_id:
            raise ApiError(
                ErrorCode.PERMISSION_ERROR, "a project key reads only its own project's data"
            )

    def default_project_id(self, project_id: str | None) -> str:
        """`project_id` when given (and readable), else the key's own project."""
        if project_id:
            self.require_project(project_id)
            return project_id
        if self.project is not None:
            return self.project.id
        raise ApiError(ErrorCode.PARAMETER_ERROR, "project_id is required with the admin token")


def resolve_caller(store: Store, admin_token: str | None, request: Request) -> Caller:
    """Authenticate the request's headers (see the module docstring)."""
    presented = key_from_headers(request.headers.items())
    if not presented:
        raise ApiError(
            ErrorCode.AUTHENTICATION_ERROR,
            "send 'Authorization: Bearer <admin token or project key>' "
            "or 'X-Pystrument-Project-Key: <key>'",
        )
    # Constant-time comparison: the token must not leak through response timing.
    if admin_token and hmac.compare_digest(presented.encode(), admin_token.encode()):
        return Caller(is_admin=True)
    project = store.projects.find_by_key(presented)
    if project is None:
        raise ApiError(ErrorCode.INVALID_PROJECT_KEY, "unknown or inactive project key")
    return Caller(is_admin=False, project=project)


# Declared so that OpenAPI (/docs) lists both ways to authenticate; `resolve_caller` reads
# the headers itself, with the same rules as the OTLP receiver.
_bearer = HTTPBearer(auto_error=False, description="admin token or project key")
_key_header = APIKeyHeader(name=KEY_HEADER, auto_error=False, description="project key")


def get_caller(
    request: Request,
    _bearer_credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    _project_key: Annotated[str | None, Security(_key_header)],
) -> Caller:
    """FastAPI dependency: the authenticated caller of this request."""
    return resolve_caller(request.app.state.store, request.app.state.admin_token, request)


CallerDep = Annotated[Caller, Depends(get_caller)]
