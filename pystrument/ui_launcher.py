"""Running the Streamlit UI as a child process (`pystrument ui`, and `pystrument up`).

The UI is a separate process because Streamlit owns its server and event loop. It gets the
store to read and the receiver to advertise through PYSTRUMENT_* environment variables
(see `ui/settings.py`), resolved here the way the other commands resolve them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from pystrument.server import read_admin_token, read_runtime_info
from pystrument.settings import ServerSettings

logger = logging.getLogger(__name__)


def ui_script() -> Path:
    """Where `ui/app.py` is (installed or in a checkout), without importing Streamlit."""
    spec = importlib.util.find_spec("ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `ui` package is missing: pip install 'pystrument[ui]'")
    return Path(next(iter(spec.submodule_search_locations))) / "app.py"


def ui_command(port: int, address: str) -> list[str]:
    """`python -m streamlit run ui/app.py` bound to `address:port`, headless (no browser,
    no first-run prompt) and without Streamlit's usage statistics (no outbound calls)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ui_script()),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def ui_environment(
    settings: ServerSettings,
    *,
    address: str,
    mongodb_url: str | None = None,
    otlp_endpoint: str | None = None,
    admin_token: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The UI process's environment: which store to read (the given URL; else the
    configured one; else a running `pystrument up`'s), the receiver endpoint for set-up
    snippets, the admin token it asks for off loopback, and its bind address."""
    env = dict(os.environ if base is None else base)
    runtime = read_runtime_info(settings.data_dir)
    url = mongodb_url or settings.mongodb_url or runtime.get("mongodb_url")
    if url:
        env["PYSTRUMENT_MONGODB_URL"] = url
    env["PYSTRUMENT_MONGODB_DATABASE"] = settings.mongodb_database
    env["PYSTRUMENT_DATA_DIR"] = str(settings.data_dir)
    endpoint = otlp_endpoint or runtime.get("grpc_endpoint")
    if endpoint:
        env["PYSTRUMENT_UI_OTLP_ENDPOINT"] = endpoint
    token = admin_token
    if token is None and settings.admin_token is not None:
        token = settings.admin_token.get_secret_value() or None
    token = token or read_admin_token(settings.data_dir)
    if token:
        env["PYSTRUMENT_ADMIN_TOKEN"] = token
    env["PYSTRUMENT_UI_ADDRESS"] = address
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return env


def start_ui(command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the UI process in its own process group, so a Ctrl-C in the terminal reaches
    the parent only and the parent decides when (and how gently) to stop it."""
    return subprocess.Popen(command, env=dict(env), start_new_session=True)


def stop_ui(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("the UI did not stop within %.0f s; killing it", timeout)
        process.kill()
        process.wait(5)
