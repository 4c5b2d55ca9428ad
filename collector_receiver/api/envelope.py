"""The REST API's response envelope and error codes (the original brief's section 3.1).

Every `/api/v1` response is `{"code": 0, "msg": "success", "data": ...}`; failures carry a
non-zero code from `ErrorCode` with a fitting HTTP status. Routers raise `ApiError` (or let
storage errors propagate); `install_error_handlers` turns them into envelopes. OTLP routes
are not enveloped: they answer with OTLP's own `google.rpc.Status`.
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage_backend import (
    ProjectNameExistsError,
    ProjectNotFoundError,
    StoreError,
    StoreUnavailableError,
)

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


class ErrorCode(IntEnum):
    SUCCESS = 0
    SYSTEM_ERROR = 10000
    PARAMETER_ERROR = 10001
    AUTHENTICATION_ERROR = 10002
    PERMISSION_ERROR = 10003
    RATE_LIMIT_ERROR = 10004
    DATABASE_ERROR = 10005
    PROJECT_NOT_FOUND = 20001
    PROJECT_NAME_EXISTS = 20002
    INVALID_PROJECT_KEY = 20003
    PERFORMANCE_DATA_INVALID = 20004
    AI_SERVICE_UNAVAILABLE = 20005
    ANALYSIS_IN_PROGRESS = 20006


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.SUCCESS: 200,
    ErrorCode.SYSTEM_ERROR: 500,
    ErrorCode.PARAMETER_ERROR: 400,
    ErrorCode.AUTHENTICATION_ERROR: 401,
    ErrorCode.PERMISSION_ERROR: 403,
    ErrorCode.RATE_LIMIT_ERROR: 429,
    ErrorCode.DATABASE_ERROR: 503,
    ErrorCode.PROJECT_NOT_FOUND: 404,
    ErrorCode.PROJECT_NAME_EXISTS: 409,
    ErrorCode.INVALID_PROJECT_KEY: 401,
    ErrorCode.PERFORMANCE_DATA_INVALID: 400,
    ErrorCode.AI_SERVICE_UNAVAILABLE: 503,
    ErrorCode.ANALYSIS_IN_PROGRESS: 409,
}


BODY_ERROR_CODES: dict[str, ErrorCode] = {}
"""Route path -> the code for an invalid request body on it (default PARAMETER_ERROR); e.g.
the brief answers bad performance data with PERFORMANCE_DATA_INVALID. Routers register."""


class ApiError(Exception):
    """A failure to report as an envelope with `code` (HTTP status from HTTP_STATUS)."""

    def __init__(self, code: ErrorCode, msg: str, data: Any = None):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.data = data


def success(data: Any = None, msg: str = "success") -> dict[str, Any]:
    """The success envelope."""
    return {"code": int(ErrorCode.SUCCESS), "msg": msg, "data": data}


def error_response(code: ErrorCode, msg: str, data: Any = None) -> JSONResponse:
    return JSONResponse(
        {"code": int(code), "msg": msg, "data": data}, status_code=HTTP_STATUS[code]
    )


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def install_error_handlers(app: FastAPI) -> None:
    """Envelope every error under /api/; leave other paths' errors to their routes."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.code, exc.msg, exc.data)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        if not _is_api(request):
            return JSONResponse({"detail": problems}, status_code=400)
        body_code = BODY_ERROR_CODES.get(request.url.path)
        if body_code and any(p["loc"][:1] == ["body"] for p in problems):
            return error_response(body_code, "invalid request body", problems)
        return error_response(ErrorCode.PARAMETER_ERROR, "invalid parameters", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if not _is_api(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        code = {
            401: ErrorCode.AUTHENTICATION_ERROR,
            403: ErrorCode.PERMISSION_ERROR,
            429: ErrorCode.RATE_LIMIT_ERROR,
        }.get(
            exc.status_code,
            ErrorCode.PARAMETER_ERROR if exc.status_code < 500 else ErrorCode.SYSTEM_ERROR,
        )
        response = error_response(code, str(exc.detail))
        response.status_code = exc.status_code
        return response

    @app.exception_handler(ProjectNotFoundError)
    async def _not_found(_request: Request, exc: ProjectNotFoundError) -> JSONResponse:
        return error_response(ErrorCode.PROJECT_NOT_FOUND, str(exc))

    @app.exception_handler(ProjectNameExistsError)
    async def _name_exists(_request: Request, exc: ProjectNameExistsError) -> JSONResponse:
        return error_response(ErrorCode.PROJECT_NAME_EXISTS, str(exc))

    @app.exception_handler(StoreError)
    async def _store(_request: Request, exc: StoreError) -> JSONResponse:
        if not isinstance(exc, StoreUnavailableError):
            logger.error("store error: %s", exc)
        return error_response(ErrorCode.DATABASE_ERROR, "database unavailable, retry later")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return error_response(ErrorCode.SYSTEM_ERROR, "internal error")
