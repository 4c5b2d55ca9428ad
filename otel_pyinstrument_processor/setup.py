"""One call to wire an application: TracerProvider + our processor + OTLP/gRPC export."""

from __future__ import annotations

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
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.util.re import parse_env_headers

from otel_pyinstrument_processor.config import DENIED_HEADERS, ProfilerConfig
from otel_pyinstrument_processor.processor import PyinstrumentSpanProcessor

ENV_PROJECT_KEY = "PYSTRUMENT_PROJECT_KEY"
ENV_SAMPLING_RATE = "PYSTRUMENT_SAMPLING_RATE"
ENV_PROFILE_INTERVAL = "PYSTRUMENT_PROFILE_INTERVAL"

# The OTel HTTP instrumentations' header capture switches (read when they instrument).
ENV_CAPTURE_REQUEST_HEADERS = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
ENV_SANITIZE_HEADERS = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"


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
    config_file: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> TracerProvider:
    """Build a TracerProvider that profiles entry spans and exports over OTLP/gRPC.

    Settings (see :class:`ProfilerConfig` and docs/configuration.md) come from the keyword
    arguments, then ``PYSTRUMENT_*`` environment variables, then the YAML file
    (``config_file`` or ``PYSTRUMENT_SDK_CONFIG``), then defaults; ``settings`` takes any
    other :class:`ProfilerConfig` key (``slow_threshold=0.2``, ``excluded_paths=[...]``).
    A bad value raises :class:`ConfigError` (a ValueError) naming the key and its source.

    - ``service_name``/``resource_attributes``: ``Resource.create`` merges them over
      ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (explicit values win).
    - ``endpoint`` (``api_endpoint``): else ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
      ``OTEL_EXPORTER_OTLP_ENDPOINT``, then ``http://localhost:4317``, as is ``insecure``.
    - ``project_key``: sent as gRPC metadata ``authorization: Bearer <key>``, merged over
      ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``.

    ``enabled: false`` leaves the profiler out (spans still export). With
    ``OTEL_SDK_DISABLED=true`` the provider has no processor and no exporter. Header capture:
    ``capture_headers`` becomes the OTel instrumentations' request-header allow-list (unless
    ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` is set), and Authorization,
    Cookie and Set-Cookie are always added to their sanitize list; instrument the app after
    this call, since the instrumentations read those variables then. With ``set_global``
    the provider becomes the global tracer provider. Call ``shutdown()`` on the returned
    provider to flush spans at exit.
    """
    config = ProfilerConfig.load(
        config_file,
        service_name=service_name,
        api_endpoint=endpoint,
        project_key=project_key,
        sampling_rate=sampling_rate,
        interval=interval,
        **settings,
    )
    resource_values = dict(resource_attributes or {})
    if config.service_name is not None:
        resource_values[SERVICE_NAME] = config.service_name
    provider = TracerProvider(resource=Resource.create(resource_values))
    if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() != "true":
        protect_headers(config.capture_headers)
        if config.enabled:
            provider.add_span_processor(PyinstrumentSpanProcessor.from_config(config))
        exporter = OTLPSpanExporter(
            endpoint=config.api_endpoint,
            insecure=insecure,
            headers=export_headers(config.project_key),
            timeout=config.request_timeout,
        )
        provider.add_span_processor(span_export_processor(exporter, config))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def span_export_processor(exporter: SpanExporter, config: ProfilerConfig) -> SpanProcessor:
    """``async_send``: a BatchSpanProcessor with the batch settings; else a SimpleSpanProcessor
    (exports on the request thread: for tests and short scripts)."""
    if not config.async_send:
        return SimpleSpanProcessor(exporter)
    return BatchSpanProcessor(
        exporter,
        max_export_batch_size=config.batch_size,
        max_queue_size=max(2048, config.batch_size),
        schedule_delay_millis=config.batch_timeout * 1000,
    )


def protect_headers(allow_list: tuple[str, ...] = ()) -> None:
    """Set the OTel HTTP instrumentations' header variables: ``allow_list`` as the captured
    request headers (unless already set) and the credential headers always sanitized."""
    if allow_list and not os.environ.get(ENV_CAPTURE_REQUEST_HEADERS):
        os.environ[ENV_CAPTURE_REQUEST_HEADERS] = ",".join(allow_list)
    current = [h.strip() for h in os.environ.get(ENV_SANITIZE_HEADERS, "").split(",") if h.strip()]
    missing = sorted(DENIED_HEADERS - {h.lower() for h in current})
    if missing:
        os.environ[ENV_SANITIZE_HEADERS] = ",".join([*current, *missing])


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
