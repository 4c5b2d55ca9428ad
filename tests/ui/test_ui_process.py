"""`pystrument ui` as a real process, looked at with headless Chromium (screenshots kept in
test-artifacts/ui/); `pystrument up` starting its UI child and stopping it on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_backend import queries as q
from storage_backend.embedded import free_port
from tests.ui.headless_chromium import HeadlessChromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CLI = [sys.executable, "-m", "pystrument"]
RENDERED = "document.querySelector('[data-testid=\"stMainBlockContainer\"] h1') !== null"
SETTLED = (
    "document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0 && "
    "!(document.querySelector('[data-testid=\"stStatusWidget\"]')?.innerText || '')"
    ".includes('Running')"
)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSTRUMENT_", "OTEL_"))}
    env.update(extra)
    return env


def _wait_healthy(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the UI exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("the UI did not become healthy")


def _streamlit_children(pid: int) -> list[int]:
    """PIDs of Streamlit processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "streamlit" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def ui_process(shop_data, tmp_path) -> Iterator[int]:
    port = free_port()
    env = _clean_env(
        PYSTRUMENT_MONGODB_URL=shop_data.url,
        PYSTRUMENT_MONGODB_DATABASE=shop_data.database,
        PYSTRUMENT_DATA_DIR=str(tmp_path / "data"),
    )
    process = subprocess.Popen(
        [*CLI, "ui", "--ui-port", str(port), "--ui-address", "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_healthy(port, process)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_overview_and_request_pages_render_in_a_real_browser(ui_process, shop_data, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    record = q.list_requests(shop_data.store.db, shop_data.project.id, q.RequestFilter(
        endpoint="GET /api/reports/sales"), sort="-duration", size=1).items[0]  # fmt: skip
    base = f"http://127.0.0.1:{ui_process}"
    pages = {
        "overview": (f"{base}/?project={shop_data.project.id}", "shop · overview", 1300),
        "request": (f"{base}/request?record={record.id}", "GET /api/reports/sales", 1300),
    }
    with HeadlessChromium(tmp_path / "chromium") as browser:
        for name, (url, heading, height) in pages.items():
            browser.open(url)
            browser.wait_for(RENDERED)
            browser.wait_for(SETTLED)
            time.sleep(1.5)  # plotly draws after the data arrives
            html = browser.html()
            assert 'data-testid="stException"' not in html, f"{name} raised"
            errors = re.findall(r'data-testid="stAlertContentError".{0,300}', html)
            assert not errors, errors
            text = browser.text()
            assert heading in text, text[:2000]
            assert "js-plotly-plot" in html  # the interactive charts were drawn
            png = ARTIFACTS / f"{name}.png"
            browser.screenshot(png, full_height=height)
            assert png.stat().st_size > 30_000  # a drawn page, not a blank one
        assert "compute_sales_statistics" in browser.text()  # the flame graph's frames


def test_up_starts_the_ui_and_stops_it_on_sigterm(tmp_path) -> None:
    ui_port = free_port()
    process = subprocess.Popen(
        [*CLI, "up", "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--http-host",
         "127.0.0.1", "--http-port", "0", "--no-analyzer", "--ui-port", str(ui_port)],
        env=_clean_env(PYSTRUMENT_DATA_DIR=str(tmp_path / "data")),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.strip().startswith("UI "):
                break
        assert f"http://localhost:{ui_port}" in lines[-1], "".join(lines)
        _wait_healthy(ui_port, process)
        children = _streamlit_children(process.pid)
        assert len(children) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        time.sleep(0.5)
        assert (
            not Path(f"/proc/{children[0]}").exists()
            or "Z" in Path(f"/proc/{children[0]}/stat").read_text().split()[2]
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
