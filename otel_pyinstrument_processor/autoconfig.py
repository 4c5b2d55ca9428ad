"""Zero-code setup: ``opentelemetry-instrument python app.py`` adds the processor.

OpenTelemetry's auto-instrumentation loads the ``opentelemetry_configurator`` entry point
``pystrument`` (declared in pyproject.toml), i.e. :class:`PystrumentConfigurator`: the SDK's
own configurator (exporters, sampler, resource from the ``OTEL_*`` variables) with our
processor added to the span processors it builds, configured from ``PYSTRUMENT_*`` variables
and ``PYSTRUMENT_SDK_CONFIG``. It also fills in defaults that suit pystrument when the
variables are unset: traces over OTLP, no metrics or logs exporter (the receiver takes
traces), and the project key as the exporter's ``authorization`` header.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import quote

from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from otel_pyinstrument_processor.config import ProfilerConfig
from otel_pyinstrument_processor.processor import PyinstrumentSpanProcessor
from otel_pyinstrument_processor.setup import protect_headers

_logger = logging.getLogger(__name__)

_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


class PystrumentConfigurator(_OTelSDKConfigurator):
    """The SDK configurator plus :class:`PyinstrumentSpanProcessor` (unless
    ``PYSTRUMENT_ENABLED=false``). A bad ``PYSTRUMENT_*`` value stops the app at start with
    a :class:`~otel_pyinstrument_processor.config.ConfigError` naming the variable."""

    def _configure(self, **kwargs: Any) -> None:
        config = ProfilerConfig.load()
        for name, value in _DEFAULTS.items():
            os.environ.setdefault(name, value)
        if config.project_key:
            add_key_header(config.project_key)
        if config.api_endpoint and not os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = config.api_endpoint
        if config.service_name:
            os.environ.setdefault("OTEL_SERVICE_NAME", config.service_name)
        protect_headers(config.capture_headers)
        if config.enabled:
            processors = list(kwargs.get("span_processors") or ())
            processors.append(PyinstrumentSpanProcessor.from_config(config))
            kwargs["span_processors"] = processors
            _logger.debug(
                "pystrument: profiling entry spans (sampling rate %s)", config.sampling_rate
            )
        super()._configure(**kwargs)


def add_key_header(project_key: str) -> None:
    """Add ``authorization: Bearer <key>`` to ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` (keeping
    the general ``OTEL_EXPORTER_OTLP_HEADERS``, which the exporter would otherwise ignore),
    unless an authorization header is configured already."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "")
    general = os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    existing = traces or general
    if "authorization=" in existing.lower().replace(" ", ""):
        return
    entry = f"authorization={quote('Bearer ' + project_key)}"
    os.environ["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = f"{existing},{entry}" if existing else entry
