"""One call to wire an application: TracerProvider + our processor + OTLP/gRPC export."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.re import parse_env_headers

from otel_pyinstrument_processor.processor import PyinstrumentSpanProcessor

ENV_PROJECT_KEY = "PYSTRUMENT_PROJECT_KEY"
ENV_SAMPLING_RATE = "PYSTRUMENT_SAMPLING_RATE"
ENV_PROFILE_INTERVAL = "PYSTRUMENT_PROFILE_INTERVAL"

DEFAULT_SAMPLING_RATE = 1.0
DEFAULT_INTERVAL = 0.001


def configure(
    *,
    service_name: str | None = None,
    endpoint: str | None = None,
    project_key: str | None = None,
    sampling_rate: float | None = None,
    interval: float | None = None,
    insecure: bool | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    set_global: bool = True,
) -> TracerProvider:
    """Build a TracerProvider that profiles entry spans and exports over OTLP/gRPC.

    Each argument left as None falls back to its environment variable, then a default:

    - ``service_name``/``resource_attributes``: ``Resource.create`` merges them over
      ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (explicit values win).
    - ``endpoint``: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
      then ``http://localhost:4317`` (resolved by the exporter itself), as is ``insecure``.
    - ``project_key``: ``PYSTRUMENT_PROJECT_KEY``; sent as gRPC metadata
      ``authorization: Bearer <key>``, merged over ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``.
    - ``sampling_rate``: ``PYSTRUMENT_SAMPLING_RATE``, then 1.0.
    - ``interval``: ``PYSTRUMENT_PROFILE_INTERVAL`` (seconds), then 0.001.

    A malformed environment value raises ValueError naming the variable. With
    ``OTEL_SDK_DISABLED=true`` the provider has no processor and no exporter. With
    ``set_global`` the provider becomes the global tracer provider. Call ``shutdown()`` on
    the returned provider to flush spans at exit.
    """
    if sampling_rate is None:
        sampling_rate = _env_float(ENV_SAMPLING_RATE, DEFAULT_SAMPLING_RATE, "a number in [0, 1]")
        if not 0 <= sampling_rate <= 1:
            raise ValueError(f"{ENV_SAMPLING_RATE} must be a number in [0, 1], got {sampling_rate}")
    if interval is None:
        interval = _env_float(ENV_PROFILE_INTERVAL, DEFAULT_INTERVAL, "a number of seconds > 0")
        if interval <= 0:
            raise ValueError(
                f"{ENV_PROFILE_INTERVAL} must be a number of seconds > 0, got {interval}"
            )

    resource_values = dict(resource_attributes or {})
    if service_name is not None:
        resource_values[SERVICE_NAME] = service_name
    provider = TracerProvider(resource=Resource.create(resource_values))
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() != "true":
        provider.add_span_processor(
            PyinstrumentSpanProcessor(sampling_rate=sampling_rate, interval=interval)
        )
        exporter = OTLPSpanExporter(
            endpoint=endpoint, insecure=insecure, headers=export_headers(project_key)
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def export_headers(project_key: str | None = None) -> dict[str, str] | None:
    """The gRPC metadata for the exporter, or None to let it read the environment.

    With a project key (argument, else ``PYSTRUMENT_PROJECT_KEY``), returns the headers from
    ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` (else ``OTEL_EXPORTER_OTLP_HEADERS``) plus
    ``authorization: Bearer <key>``; the exporter ignores the environment once given
    headers, hence the merge. Keys are lowercase, as gRPC metadata requires.
    """
    key = project_key if project_key is not None else os.environ.get(ENV_PROJECT_KEY)
    if not key:
        return None
    raw = os.environ.get(OTEL_EXPORTER_OTLP_TRACES_HEADERS) or os.environ.get(
        OTEL_EXPORTER_OTLP_HEADERS
    )
    headers = {name.lower(): value for name, value in parse_env_headers(raw or "", True).items()}
    headers["authorization"] = f"Bearer {key}"
    return headers


def _env_float(name: str, default: float, expected: str) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be {expected}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {expected}, got {raw!r}")
    return value
