"""WSGI entry point of the example Django shop, instrumented with OpenTelemetry and pystrument.

    export PYSTRUMENT_PROJECT_KEY=<key printed by pystrument up>
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317
    PYTHONPATH=. gunicorn examples.django_app.wsgi:application
    # or: PYTHONPATH=. python examples/django_app/manage.py runserver --noreload

Order matters: configure pystrument and instrument Django before the WSGI handler loads
the middleware.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

import django
from django.core.wsgi import get_wsgi_application
from opentelemetry.instrumentation.django import DjangoInstrumentor

from otel_pyinstrument_processor.django import configure_from_settings

django.setup(set_prefix=False)
provider = configure_from_settings(service_name=os.environ.get("OTEL_SERVICE_NAME", "shop-django"))
DjangoInstrumentor().instrument(tracer_provider=provider)
application = get_wsgi_application()

from examples.django_app.views import ensure_schema  # noqa: E402

ensure_schema()
