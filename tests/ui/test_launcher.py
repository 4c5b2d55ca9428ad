"""How `pystrument ui` / `up` tell the UI process where its store, receiver and token are."""

from __future__ import annotations

from pathlib import Path

from pystrument.server import ADMIN_TOKEN_FILE, write_runtime_info
from pystrument.settings import ServerSettings
from pystrument.ui_launcher import ui_command, ui_environment, ui_script
from ui.settings import is_loopback, store_location


def test_a_running_up_is_found_through_the_data_dir(tmp_path: Path) -> None:
    write_runtime_info(tmp_path, {"mongodb_url": "mongodb://127.0.0.1:1111",
                                  "grpc_endpoint": "http://localhost:4999"})  # fmt: skip
    (tmp_path / ADMIN_TOKEN_FILE).write_text("pat_from_up\n")
    env = ui_environment(ServerSettings(data_dir=tmp_path), address="127.0.0.1", base={})
    assert env["PYSTRUMENT_MONGODB_URL"] == "mongodb://127.0.0.1:1111"
    assert env["PYSTRUMENT_UI_OTLP_ENDPOINT"] == "http://localhost:4999"
    assert env["PYSTRUMENT_ADMIN_TOKEN"] == "pat_from_up"
    assert env["PYSTRUMENT_UI_ADDRESS"] == "127.0.0.1"
    # ... and the UI reads back exactly that location.
    location = store_location(env)
    assert (location.mongodb_url, location.database) == ("mongodb://127.0.0.1:1111", "pystrument")


def test_configured_url_and_token_win_over_the_data_dir(tmp_path: Path) -> None:
    write_runtime_info(tmp_path, {"mongodb_url": "mongodb://stale:1"})
    settings = ServerSettings(data_dir=tmp_path, mongodb_url="mongodb://db:27017",
                              admin_token="pat_configured")  # fmt: skip
    env = ui_environment(settings, address="0.0.0.0", base={"PATH": "/bin"})
    assert env["PYSTRUMENT_MONGODB_URL"] == "mongodb://db:27017"
    assert env["PYSTRUMENT_ADMIN_TOKEN"] == "pat_configured"
    assert env["PATH"] == "/bin"
    assert "PYSTRUMENT_UI_OTLP_ENDPOINT" not in env


def test_command_is_headless_and_bound_as_asked() -> None:
    command = ui_command(9123, "127.0.0.1")
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert command[4] == str(ui_script()) and ui_script().name == "app.py"
    flags = dict(zip(command[5::2], command[6::2], strict=False))
    assert flags["--server.port"] == "9123"
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback(None) and not is_loopback("")  # Streamlit's unset = all interfaces
