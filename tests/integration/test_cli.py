"""`pystrument` as a user runs it: real processes, real signals, the real embedded store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.otlp_helpers import exporter, make_spans

CLI = [sys.executable, "-m", "pystrument"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSTRUMENT_", "OTEL_"))}
    env["PYSTRUMENT_DATA_DIR"] = str(data_dir)
    return env


def _store_pids(data_dir: Path) -> list[int]:
    """PIDs of embedded store processes serving this data directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "secantusd" in cmdline and str(data_dir) in cmdline:
            pids.append(int(entry.name))
    return pids


class Up:
    """A running `pystrument up` and what it printed."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [
                *CLI,
                "up",
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                "0",
                "--http-host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--no-ui",  # tests never bind 8501; tests/ui covers the UI child
            ],
            env={**_env(data_dir), **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            if "Project 'default'" in line:
                break
        text = "\n".join(self.lines)
        assert "pystrument is up." in text, text + (
            self.proc.stderr.read() if self.proc.stderr else ""
        )
        self.endpoint = re.search(r"OTLP/gRPC endpoint : (\S+)", text).group(1)
        self.http = re.search(r"HTTP +: (\S+)", text).group(1)
        self.key_line = next(line for line in self.lines if "Project 'default'" in line)

    @property
    def key(self) -> str:
        return re.search(r"key (psk_\S+)", self.key_line).group(1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def test_up_creates_default_project_receives_spans_and_stops_cleanly(tmp_path: Path):
    data_dir = tmp_path / "data"
    up = Up(data_dir)
    try:
        assert "mongodb://127.0.0.1:" in "\n".join(up.lines)
        key = up.key
        assert len(key) > 40
        assert _store_pids(data_dir), "the embedded store should be running"
        with urllib.request.urlopen(up.http + "/ready", timeout=10) as resp:
            assert json.loads(resp.read()) == {"status": "ok", "store": "ok"}
        # The generated admin token is printed and opens the management API.
        admin_token = re.search(r"Admin token +: (pat_\S+)", "\n".join(up.lines)).group(1)
        request = urllib.request.Request(
            up.http + "/api/v1/projects", headers={"Authorization": f"Bearer {admin_token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            listing = json.loads(resp.read())
        assert listing["code"] == 0 and listing["data"]["items"][0]["name"] == "default"
        result = exporter(up.endpoint.replace("localhost", "127.0.0.1"), key).export(make_spans())
        assert result is SpanExportResult.SUCCESS

        # One-off commands find the running store through the data directory.
        listed = subprocess.run(
            [*CLI, "projects", "list", "--json"],
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        projects = json.loads(listed.stdout)
        assert [p["name"] for p in projects] == ["default"]
        assert key not in listed.stdout  # keys are never listed
        assert projects[0]["last_activity"] is not None

        created = subprocess.run(
            [*CLI, "projects", "create", "shop", "--json"],
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        new_key = json.loads(created.stdout)["key"]
        assert new_key.startswith("psk_") and new_key != key
        assert exporter(up.endpoint, new_key).export(make_spans()) is SpanExportResult.SUCCESS
    finally:
        code = up.stop()
    assert code == 0
    assert _store_pids(data_dir) == [], "no orphan store process after SIGTERM"
    assert not (data_dir / "runtime.json").exists()
    stderr = up.proc.stderr.read() if up.proc.stderr else ""
    assert key not in stderr, "the key must not appear in logs"

    # Second start: same data, same default project, and its key printed again from the 0600 file.
    assert (data_dir / "default-project.key").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "admin.token").stat().st_mode & 0o777 == 0o600
    again = Up(data_dir)
    try:
        assert again.key == key
        assert admin_token in "\n".join(again.lines)
    finally:
        assert again.stop() == 0
    assert _store_pids(data_dir) == []


def test_receiver_alone_needs_a_mongodb_url(tmp_path: Path):
    result = subprocess.run(
        [*CLI, "receiver"], env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "PYSTRUMENT_MONGODB_URL" in result.stderr


def test_projects_create_and_list_against_a_mongodb_url(embedded_server, tmp_path: Path):
    env = _env(tmp_path) | {
        "PYSTRUMENT_MONGODB_URL": embedded_server.url,
        "PYSTRUMENT_MONGODB_DATABASE": "cli_projects",
    }
    run = lambda *a: subprocess.run(  # noqa: E731
        [*CLI, "projects", *a], env=env, capture_output=True, text=True, timeout=60
    )
    first = run("create", "billing", "--json")
    assert first.returncode == 0, first.stderr
    assert run("create", "billing").returncode == 1  # duplicate name
    listing = run("list")
    assert "billing" in listing.stdout
    assert json.loads(first.stdout)["key"] not in listing.stdout


@pytest.mark.parametrize("bad", [["--grpc-port", "70000"], ["--log-level", "LOUD"]])
def test_bad_configuration_is_refused_with_a_message(tmp_path: Path, bad: list[str]):
    result = subprocess.run(
        [*CLI, "up", *bad], env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert ("grpc_port" in result.stderr) or ("log-level" in result.stderr)


def test_help_explains_the_commands():
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for word in ("up", "receiver", "projects", "demo", "PYSTRUMENT_MONGODB_URL"):
        assert word in result.stdout
