"""Django support: settings-based configuration (the seed's ``PERFORMANCE_MONITOR`` dict) and
SQL query count/time from Django's database layer.

Django is imported only when Django calls in here (settings, middleware), never at package
import. Spans come from opentelemetry-instrumentation-django; see examples/django_app.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from otel_pyinstrument_processor.config import ProfilerConfig
from otel_pyinstrument_processor.request_profile import current_marker
from otel_pyinstrument_processor.setup import configure

SETTINGS_NAME = "PERFORMANCE_MONITOR"


def settings_config(monitor_settings: Mapping[str, Any]) -> ProfilerConfig:
    """Validate a ``PERFORMANCE_MONITOR`` dict; errors name ``PERFORMANCE_MONITOR`` and the key."""
    return ProfilerConfig.from_mapping(monitor_settings, source=f"settings.{SETTINGS_NAME}")


def configure_from_settings(settings: Any = None, **overrides: Any) -> TracerProvider:
    """:func:`configure` from ``settings.PERFORMANCE_MONITOR`` (``django.conf.settings`` by
    default); ``PYSTRUMENT_*`` variables and ``overrides`` still win over the dict."""
    if settings is None:
        from django.conf import settings as django_settings

        settings = django_settings
    monitor = dict(getattr(settings, SETTINGS_NAME, {}) or {})
    settings_config(monitor)  # fail here, naming the setting, before merging with the env
    values = {str(key).lower(): value for key, value in monitor.items()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return configure(**_file_keys_only(values))


def _file_keys_only(values: dict[str, Any]) -> dict[str, Any]:
    # The seed's keys that configure() names differently or that only the server uses.
    renamed = dict(values)
    if "api_endpoint" in renamed:
        renamed["endpoint"] = renamed.pop("api_endpoint")
    return renamed


class SQLMetricsMiddleware:
    """Counts the request's SQL queries (count, time, slow ones) through Django's
    ``connection.execute_wrapper`` on every database connection, when the request is being
    profiled; add it to ``MIDDLEWARE``. Database child spans are then not counted again."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.db import connections

        self.get_response = get_response
        self._connections = connections

    def __call__(self, request: Any) -> Any:
        marker = current_marker()
        if marker is None:
            return self.get_response(request)
        metrics = marker.metrics
        metrics.queries_counted_by_app = True

        def count_query(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                        context: Any) -> Any:  # fmt: skip
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                metrics.add_query(time.perf_counter() - started)

        with contextlib.ExitStack() as stack:
            for connection in self._connections.all():
                stack.enter_context(connection.execute_wrapper(count_query))
            return self.get_response(request)
