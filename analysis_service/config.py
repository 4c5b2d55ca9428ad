"""Analysis configuration, in the brief's section 9 shape (`ai_services`, `default_service`,
`analysis_templates`) plus the worker's queue settings.

Secrets are never written in the file: `api_key: ${OPENAI_API_KEY}` and header values like
`Bearer ${CUSTOM_AI_TOKEN}` are expanded from the environment; an `openai` service without an
`api_key` reads PYSTRUMENT_OPENAI_API_KEY, then OPENAI_API_KEY.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str) -> str:
    """Replace `${NAME}` with the environment variable NAME (empty when unset)."""
    return _VAR.sub(lambda m: os.environ.get(m.group(1), ""), text)


class AIServiceConfig(BaseModel):
    """One analyzer service. `provider` picks the analyzer: builtin | openai | custom."""

    model_config = {"extra": "forbid"}

    provider: Literal["builtin", "openai", "custom"]
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    version: str = ""
    endpoint: str | None = Field(
        None,
        description="openai: base URL or the full .../chat/completions URL; custom: POST URL",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(30.0, gt=0)
    max_tokens: int = Field(4000, ge=1)
    temperature: float = Field(0.3, ge=0, le=2)
    max_retries: int = Field(0, ge=0, description="client-side retries before the job's own")
    input_cost_per_1k_tokens: float = Field(0.0, ge=0)
    output_cost_per_1k_tokens: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _needs_endpoint(self) -> AIServiceConfig:
        if self.provider == "custom" and not self.endpoint:
            raise ValueError("a custom AI service needs an endpoint")
        return self

    def resolved_api_key(self) -> str | None:
        """The key with ${VAR} expanded; for openai, falls back to the environment."""
        if self.api_key is not None:
            key = expand_env(self.api_key.get_secret_value())
            if key:
                return key
        if self.provider == "openai":
            return os.environ.get("PYSTRUMENT_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        return None

    def resolved_headers(self) -> dict[str, str]:
        return {k: expand_env(v) for k, v in self.headers.items()}

    def base_url(self) -> str | None:
        """The OpenAI client's base URL (the brief gives the full chat completions URL)."""
        if not self.endpoint:
            return None
        url = self.endpoint.rstrip("/")
        suffix = "/chat/completions"
        return url[: -len(suffix)] if url.endswith(suffix) else url


DEFAULT_TEMPLATES = {
    "performance_analysis": (
        "You are a Python performance engineer. Analyse the performance data of one slow "
        "web request below: identify its bottlenecks and give concrete optimization advice."
    ),
    "bottleneck_detection": "Identify the bottlenecks in the call paths below.",
}


class AnalysisSettings(BaseModel):
    """Analyzers and the worker. Every key is documented in docs/analysis.md."""

    model_config = {"extra": "forbid"}

    ai_services: dict[str, AIServiceConfig] = Field(
        default_factory=lambda: {"builtin": AIServiceConfig(provider="builtin")}
    )
    default_service: str = "builtin"
    analysis_templates: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    lease_seconds: float = Field(60.0, gt=0, description="job lease; renewed every third")
    retry_backoff_seconds: float = Field(
        5.0, gt=0, description="first retry delay; doubles per attempt, capped at 10 minutes"
    )
    time_limit_seconds: float = Field(
        300.0, gt=0, description="this worker's cap on a job's run time (jobs carry their own)"
    )
    poll_interval_seconds: float = Field(1.0, gt=0, description="idle wait between claims")
    auto_analysis_window_seconds: float = Field(
        300.0, gt=0, description="at most one automatic analysis per project+route per window"
    )
    cleanup_retention_days: int = Field(30, ge=1, description="analyses and finished jobs kept")
    cleanup_hour_utc: int = Field(2, ge=0, le=23, description="daily cleanup time (UTC hour)")
    report_interval_hours: int | None = Field(
        None, ge=1, description="periodic report per active project; unset = none"
    )

    @field_validator("ai_services")
    @classmethod
    def _builtin_always_there(cls, v: dict[str, AIServiceConfig]) -> dict[str, AIServiceConfig]:
        v = dict(v)
        v.setdefault("builtin", AIServiceConfig(provider="builtin"))
        return v

    @model_validator(mode="after")
    def _default_exists(self) -> AnalysisSettings:
        if self.default_service not in self.ai_services:
            raise ValueError(
                f"default_service {self.default_service!r} is not one of "
                f"ai_services {sorted(self.ai_services)}"
            )
        return self

    def service(self, name: str | None) -> tuple[str, AIServiceConfig]:
        """The named service (the default when `name` is empty); KeyError if unknown."""
        name = name or self.default_service
        if name not in self.ai_services:
            raise KeyError(f"unknown AI service {name!r}; configured: {sorted(self.ai_services)}")
        return name, self.ai_services[name]
