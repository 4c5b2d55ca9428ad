"""WSGI entry point for an app you cannot edit: wrap it here, serve it with any WSGI server.

    export PYSTRUMENT_PROJECT_KEY=<key> OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317
    gunicorn --workers 4 --preload examples.flask_app.wsgi:application

`configure()` runs once, before gunicorn forks its workers (with or without `--preload`):
the processor holds no thread or profiler until a request starts one, and the SDK's
BatchSpanProcessor restarts its export thread in each forked worker.
"""

from __future__ import annotations

import os

from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

from examples.flask_app.app import create_app
from otel_pyinstrument_processor import configure

provider = configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "shop-wsgi"))
application = OpenTelemetryMiddleware(create_app().wsgi_app, tracer_provider=provider)
