"""Settings of the example Django shop (no models: raw SQL on SQLite keeps it small)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    # Counts SQL queries of profiled requests through Django's execute_wrapper.
    "otel_pyinstrument_processor.django.SQLMetricsMiddleware",
    "django.middleware.common.CommonMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGO_DB_PATH", str(Path(tempfile.gettempdir()) / "pystrument-django-shop.sqlite3")
        ),
    }
}
USE_TZ = True

# pystrument, with the seed's keys (any PYSTRUMENT_* variable overrides them).
PERFORMANCE_MONITOR = {
    "PROJECT_KEY": os.getenv("PYSTRUMENT_PROJECT_KEY"),
    "API_ENDPOINT": os.getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
    "ENABLED": True,
    "SAMPLING_RATE": 1.0,
    "EXCLUDE_PATHS": ["/static/", "/media/", "/health/", "/favicon.ico"],
    "INCLUDE_PATTERNS": ["/api/", "/health/"],
    "TRACK_SQL": True,
    "TRACK_CACHE": True,
    "SLOW_QUERY_THRESHOLD": 0.05,
}
