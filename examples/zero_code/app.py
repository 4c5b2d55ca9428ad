"""The example shop with no OpenTelemetry or pystrument code at all: run it under
`opentelemetry-instrument` and the Flask instrumentation and pystrument's processor are
added from installed entry points and configured from the environment.

    export OTEL_SERVICE_NAME=shop OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317
    export PYSTRUMENT_PROJECT_KEY=<key printed by pystrument up>
    opentelemetry-instrument python examples/zero_code/app.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from examples.flask_app.app import create_app

if __name__ == "__main__":
    app = create_app()
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
