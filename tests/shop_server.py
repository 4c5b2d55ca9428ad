"""The example Flask shop, instrumented and served on a free port, exporting to a receiver:
the real pipeline that several test modules fill their stores with."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.trace import TracerProvider
from werkzeug.serving import make_server

from examples.flask_app.app import create_app
from otel_pyinstrument_processor import configure


@contextlib.contextmanager
def running_shop(
    endpoint: str, project_key: str, service_name: str, *, sql_spans: bool = True
) -> Iterator[tuple[str, TracerProvider]]:
    """Yield the shop's base URL and its provider (our processor + the real OTLP gRPC exporter
    to `endpoint`, profiling every request with pyinstrument's hook, so that its few-ms
    requests carry trees too). With `sql_spans`, its SQLite queries become CLIENT
    spans with db.* attributes, as in examples/flask_app's instrumented_app(). Afterwards the
    server stops and the instrumentation is undone."""
    provider = configure(
        service_name=service_name,
        endpoint=endpoint,
        project_key=project_key,
        sampling_rate=1.0,
        set_global=False,
        profiler_mode="pyinstrument",
    )
    if sql_spans:
        SQLite3Instrumentor().instrument(tracer_provider=provider)
    app = create_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", provider
    finally:
        server.shutdown()
        FlaskInstrumentor().uninstrument_app(app)
        if sql_spans:
            SQLite3Instrumentor().uninstrument()
        provider.shutdown()
