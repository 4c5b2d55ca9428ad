"""Just enough of the Chrome DevTools Protocol to look at a Streamlit page: start headless
Chromium, open a URL, wait until the app has rendered, read the DOM, take a screenshot.

`chromium --screenshot` alone is not enough: a Streamlit page is drawn from websocket
messages after load, and `--virtual-time-budget` does not wait for the server. The
`websockets` package (dev extra) is the DevTools client.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class HeadlessChromium:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, profile_dir: Path):
        self.profile_dir = profile_dir
        self.process: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._ws: Any = None
        self._connection = ExitStack()  # websockets >= 17.1 wants connect() as a context

    def __enter__(self) -> HeadlessChromium:
        binary = chromium_path()
        if binary is None:
            raise RuntimeError("chromium is not installed (.ci/run installs it)")
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile_dir}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        path = port_file.read_text().split()[1]
        self._ws = self._connection.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        )
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        self._connection.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def _call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        self._ws.send(json.dumps(message))
        while True:
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self._call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        return result.get("result", {}).get("value")

    def open(self, url: str) -> None:
        self._call("Page.navigate", session=True, url=url)

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        """Poll a JavaScript expression until it is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.25)
        raise TimeoutError(f"waited {timeout} s for {expression}")

    def text(self) -> str:
        return self.evaluate("document.body.innerText") or ""

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML") or ""

    def screenshot(self, path: Path, *, full_height: int | None = None) -> None:
        """A PNG of the page (of `full_height` pixels when given, to show below the fold)."""
        if full_height:
            self._call("Emulation.setDeviceMetricsOverride", session=True, width=1400,
                       height=full_height, deviceScaleFactor=1, mobile=False)  # fmt: skip
            time.sleep(1.0)  # let plotly re-layout to the new viewport
        data = self._call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
