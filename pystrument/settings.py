"""Server settings: defaults < YAML file < PYSTRUMENT_* environment variables < CLI flags.

Every key is documented in docs/configuration.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from analysis_service.config import AnalysisSettings
from storage_backend import StoreSettings
from storage_backend.embedded import default_data_dir


class ServerSettings(BaseSettings):
    """The platform's configuration (receiver, store, CLI)."""

    model_config = SettingsConfigDict(env_prefix="PYSTRUMENT_", extra="forbid")

    mongodb_url: str | None = Field(
        None, description="MongoDB URL; unset = start the embedded server"
    )
    mongodb_database: str = Field("pystrument", description="database name")
    data_dir: Path = Field(
        default_factory=default_data_dir, description="embedded store and key file"
    )
    retention_days: int = Field(30, ge=1, description="default days data is kept")
    records_retention_days: int | None = Field(
        None, ge=1, description="days performance records are kept (default: retention_days)"
    )
    spans_retention_days: int | None = Field(
        None, ge=1, description="days trace spans are kept (default: retention_days)"
    )
    analyses_retention_days: int | None = Field(
        None, ge=1, description="days analysis results are kept (default: retention_days)"
    )
    admin_token: SecretStr | None = Field(
        None,
        description="REST API admin token; unset: `pystrument up` generates one in data_dir",
    )
    api_rate_limit_per_second: float = Field(
        100.0,
        ge=0,
        description="REST API requests a second per caller (admin, project, or client address); "
        "beyond: 429, code 10004; 0 = off",
    )
    api_rate_limit_burst: int = Field(
        300, ge=1, description="REST API requests a caller may send at once before the rate applies"
    )
    grpc_host: str = Field("0.0.0.0", description="OTLP/gRPC bind address")
    grpc_port: int = Field(4317, ge=0, le=65535, description="OTLP/gRPC port")
    grpc_max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest accepted OTLP/gRPC message"
    )
    grpc_max_workers: int = Field(16, ge=1, description="gRPC handler threads")
    grpc_max_concurrent_streams: int = Field(100, ge=1, description="per connection")
    grpc_keepalive_seconds: float = Field(
        0, ge=0, description="gRPC keepalive ping interval on idle connections (0 = default)"
    )
    http_host: str = Field("0.0.0.0", description="HTTP bind address (OTLP/HTTP, REST API)")
    http_port: int = Field(4318, ge=0, le=65535, description="HTTP port (OTLP/HTTP, REST API)")
    http_max_body_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="largest OTLP/HTTP body, after decompression"
    )
    http_max_inflight_body_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1024,
        description="OTLP/HTTP body bytes held at once; beyond: 429 with Retry-After",
    )
    http_cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins browsers may export from (OTLP/HTTP from web apps); empty = none",
    )
    ingest_max_inflight_spans: int = Field(
        100_000, ge=1, description="spans admitted at once; beyond: RESOURCE_EXHAUSTED / 429"
    )
    ingest_max_batch_spans: int = Field(
        10_000, ge=1, description="most spans one group-commit write carries"
    )
    ingest_writers: int = Field(2, ge=1, le=64, description="group-commit writer threads")
    ingest_retry_after_seconds: float = Field(
        1.0, gt=0, description="retry hint sent with RESOURCE_EXHAUSTED / 429"
    )
    ingest_admission_wait_seconds: float = Field(
        0.5,
        ge=0,
        description="how long an export over the bound waits for room before it is refused",
    )
    max_span_attributes: int = Field(
        1024, ge=1, description="spans with more attributes are rejected (partial success)"
    )
    tls_cert_file: Path | None = Field(None, description="TLS certificate (PEM) for receivers")
    tls_key_file: Path | None = Field(None, description="TLS private key (PEM) for receivers")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as text, or one JSON object per line"
    )
    analyzer_concurrency: int = Field(
        1, ge=1, le=64, description="jobs one analysis worker runs at once"
    )
    analyzer_enabled: bool = Field(True, description="`pystrument up` runs an analysis worker")
    ui_enabled: bool = Field(True, description="`pystrument up` starts the Streamlit UI")
    ui_port: int = Field(8501, ge=0, le=65535, description="Streamlit UI port")
    ui_address: str = Field(
        "127.0.0.1", description="UI bind address; off loopback it asks for the admin token"
    )
    analysis: AnalysisSettings = Field(
        default_factory=AnalysisSettings, description="analyzers and job queue (YAML)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PYSTRUMENT_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def store_settings(self) -> StoreSettings:
        return StoreSettings(
            mongodb_url=self.mongodb_url,
            database=self.mongodb_database,
            data_dir=self.data_dir,
            retention_days=self.retention_days,
            records_retention_days=self.records_retention_days,
            spans_retention_days=self.spans_retention_days,
            analyses_retention_days=self.analyses_retention_days,
        )


def load_settings(config_file: str | None = None, **overrides: Any) -> ServerSettings:
    """Settings from the YAML file (`config_file` or PYSTRUMENT_CONFIG), the environment and
    `overrides` (CLI flags; None values are ignored). Raises SystemExit with a message that
    names the bad key."""
    if config_file:
        if not Path(config_file).is_file():
            raise SystemExit(f"pystrument: config file {config_file} does not exist")
        os.environ["PYSTRUMENT_CONFIG"] = config_file
    elif (
        os.environ.get("PYSTRUMENT_CONFIG") and not Path(os.environ["PYSTRUMENT_CONFIG"]).is_file()
    ):
        raise SystemExit(
            f"pystrument: PYSTRUMENT_CONFIG={os.environ['PYSTRUMENT_CONFIG']} does not exist"
        )
    try:
        return ServerSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SystemExit(f"pystrument: invalid configuration: {problems}") from None
