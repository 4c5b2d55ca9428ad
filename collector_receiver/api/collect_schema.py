"""The brief's performance record, as `POST /api/v1/performance/collect` accepts it.

Field names follow the original brief's `performance_records` model (section 3.2). Unknown
fields are ignored (older or newer SDKs may send more); wrong types and out-of-range values
are refused with code 20004 and the list of problems.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_IGNORE = ConfigDict(extra="ignore")


class RequestInfoIn(BaseModel):
    model_config = _IGNORE
    method: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")
    path: str = Field(min_length=1, max_length=4096)
    route: str | None = Field(None, max_length=4096, description="route template, if known")
    query_params: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    user_agent: str | None = Field(None, max_length=2048)
    remote_ip: str | None = Field(None, max_length=64)


class ResponseInfoIn(BaseModel):
    model_config = _IGNORE
    status_code: int = Field(ge=100, le=599)
    response_size: int | None = Field(None, ge=0)
    content_type: str | None = Field(None, max_length=256)


class MemoryUsageIn(BaseModel):
    model_config = _IGNORE
    peak_memory: float | None = Field(None, ge=0, description="MB")
    memory_delta: float | None = Field(None, description="MB")


class DatabaseMetricsIn(BaseModel):
    model_config = _IGNORE
    query_count: int = Field(0, ge=0)
    query_time: float = Field(0.0, ge=0)
    slow_queries: int = Field(0, ge=0)


class CacheMetricsIn(BaseModel):
    model_config = _IGNORE
    cache_hits: int = Field(0, ge=0)
    cache_misses: int = Field(0, ge=0)
    cache_time: float = Field(0.0, ge=0)


class PerformanceMetricsIn(BaseModel):
    model_config = _IGNORE
    total_duration: float = Field(ge=0, le=86_400, description="seconds")
    cpu_time: float | None = Field(None, ge=0, le=86_400)
    memory_usage: MemoryUsageIn | None = None
    database_metrics: DatabaseMetricsIn | None = None
    cache_metrics: CacheMetricsIn | None = None


class FunctionCallIn(BaseModel):
    model_config = _IGNORE
    call_id: str = Field(min_length=1, max_length=64)
    function_name: str = Field(min_length=1, max_length=1024)
    file_path: str = Field("", max_length=4096)
    line_number: int = Field(0, ge=0)
    duration: float = Field(ge=0, le=86_400)
    parent_call_id: str | None = Field(None, max_length=64)
    depth: int = Field(0, ge=0, le=10_000)
    call_order: int = Field(0, ge=0)


class VersionInfoIn(BaseModel):
    model_config = _IGNORE
    app_version: str | None = Field(None, max_length=128)
    git_commit: str | None = Field(None, max_length=64)
    deploy_time: datetime | None = None


class EnvironmentIn(BaseModel):
    model_config = _IGNORE
    python_version: str | None = Field(None, max_length=64)
    framework_version: str | None = Field(None, max_length=64)
    server_info: str | None = Field(None, max_length=256)


class CollectedRecordIn(BaseModel):
    """One request's performance record in the brief's shape."""

    model_config = _IGNORE
    trace_id: str | None = Field(None, max_length=64)
    service_name: str | None = Field(None, max_length=256)
    request_info: RequestInfoIn
    response_info: ResponseInfoIn
    performance_metrics: PerformanceMetricsIn
    function_calls: list[FunctionCallIn] = Field(default_factory=list, max_length=10_000)
    version_info: VersionInfoIn = Field(default_factory=VersionInfoIn)
    environment: EnvironmentIn = Field(default_factory=EnvironmentIn)
    is_error: bool = False
    timestamp: datetime | None = Field(None, description="request start; default: received")

    @field_validator("timestamp")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        if value is not None and not 1970 <= value.year <= 2100:
            raise ValueError("timestamp must be between 1970 and 2100")
        return value
