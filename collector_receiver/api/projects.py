"""`/api/v1/projects`: the brief's project CRUD, plus key rotation.

Creating, updating, deleting and rotating keys need the admin token; a project key sees
only its own project. The key is in the response of create and rotate-key only (admin).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from collector_receiver.api.access import CallerDep
from collector_receiver.api.envelope import ApiError, ErrorCode, success
from storage_backend import AlertThreshold, Project, ProjectConfig, Store

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])

Framework = Literal["flask", "django", "fastapi", "other"]


class AlertThresholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_time: float = Field(1.0, gt=0, le=3600, description="seconds")
    error_rate: float = Field(0.05, ge=0, le=1)
    memory_usage: int = Field(512, ge=0, le=1_048_576, description="MB")


class ProjectIn(BaseModel):
    """The brief's create body (`enable_ai_analysis` maps to `config.auto_analysis`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    description: str = Field("", max_length=2000)
    framework: Framework = "other"
    base_url: str = Field("", max_length=2000)
    sampling_rate: float = Field(1.0, ge=0, le=1, description="share of requests profiled")
    enable_ai_analysis: bool = False
    alert_threshold: AlertThresholdIn | None = None
    retention_days: int | None = Field(None, ge=1, le=3650)


class ProjectUpdate(BaseModel):
    """Fields to change; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"\S")
    description: str | None = Field(None, max_length=2000)
    framework: Framework | None = None
    base_url: str | None = Field(None, max_length=2000)
    status: Literal["active", "inactive", "archived"] | None = None
    sampling_rate: float | None = Field(None, ge=0, le=1)
    enabled: bool | None = None
    enable_ai_analysis: bool | None = None
    alert_threshold: AlertThresholdIn | None = None
    retention_days: int | None = Field(None, ge=1, le=3650)


def project_json(project: Project) -> dict[str, Any]:
    """A project as the API shows it: never its key (only the display prefix)."""
    data = dataclasses.asdict(project)
    data["key_prefix"] = project.key_prefix
    return data


def _store(request: Request) -> Store:
    return request.app.state.store


@router.post("", summary="Create a project (admin); the response has its key, shown once")
def create_project(body: ProjectIn, request: Request, caller: CallerDep):
    caller.require_admin()
    config = ProjectConfig(
        sampling_rate=body.sampling_rate,
        auto_analysis=body.enable_ai_analysis,
        alert_threshold=AlertThreshold(**body.alert_threshold.model_dump())
        if body.alert_threshold
        else AlertThreshold(),
        retention_days=body.retention_days,
    )
    project, key = _store(request).projects.create(
        body.name,
        description=body.description,
        framework=body.framework,
        config=config,
        base_url=body.base_url,
    )
    return success({**project_json(project), "project_key": key})


@router.get("", summary="List projects (admin: all; a project key: its own)")
def list_projects(
    request: Request,
    caller: CallerDep,
    page: int = Query(1, ge=1, le=100_000),
    size: int = Query(20, ge=1, le=100),
):
    if not caller.is_admin:
        own = [project_json(caller.project)] if caller.project and page == 1 else []
        return success({"items": own, "page": page, "size": size, "total": 1})
    projects = _store(request).projects
    items = projects.list(skip=(page - 1) * size, limit=size)
    return success(
        {
            "items": [project_json(p) for p in items],
            "page": page,
            "size": size,
            "total": projects.count(),
        }
    )


@router.get("/{project_id}", summary="Get a project")
def get_project(project_id: str, request: Request, caller: CallerDep):
    caller.require_project(project_id)
    return success(project_json(_store(request).projects.get(project_id)))


@router.put("/{project_id}", summary="Update a project (admin)")
def update_project(
    project_id: str,
    body: ProjectUpdate,
    request: Request,
    caller: CallerDep,
):
    caller.require_admin()
    projects = _store(request).projects
    config = None
    changes = body.model_dump(exclude_unset=True)
    config_fields = {
        "sampling_rate",
        "enabled",
        "enable_ai_analysis",
        "alert_threshold",
        "retention_days",
    }
    if config_fields & changes.keys():
        config = projects.get(project_id).config
        if body.sampling_rate is not None:
            config.sampling_rate = body.sampling_rate
        if body.enabled is not None:
            config.enabled = body.enabled
        if body.enable_ai_analysis is not None:
            config.auto_analysis = body.enable_ai_analysis
        if body.alert_threshold is not None:
            config.alert_threshold = AlertThreshold(**body.alert_threshold.model_dump())
        if "retention_days" in changes:
            config.retention_days = body.retention_days
    try:
        project = projects.update(
            project_id,
            name=body.name,
            description=body.description,
            framework=body.framework,
            base_url=body.base_url,
            status=body.status,
            config=config,
        )
    except ValueError as exc:
        raise ApiError(ErrorCode.PARAMETER_ERROR, str(exc)) from exc
    return success(project_json(project))


@router.delete("/{project_id}", summary="Delete a project and all its data (admin)")
def delete_project(project_id: str, request: Request, caller: CallerDep):
    caller.require_admin()
    _store(request).projects.delete(project_id)
    return success({"id": project_id, "deleted": True})


@router.post("/{project_id}/rotate-key", summary="Give a project a new key (admin)")
def rotate_key(project_id: str, request: Request, caller: CallerDep):
    caller.require_admin()
    key = _store(request).projects.rotate_key(project_id)
    return success({"id": project_id, "project_key": key})
