"""The embedded MongoDB-wire server: SecantusDB run as a separate child process.

SecantusDB is GPL, so it is never imported: we start its `secantusd-py` launcher as a
process and talk to it over TCP with pymongo, exactly as to mongod. This module is the
only place that knows about SecantusDB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from storage_backend.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

LAUNCHER = "secantusd-py"
START_ATTEMPTS = 3


class _ExitedDuringStart(StoreUnavailableError):
    """The server process ended before it answered a ping."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _find_launcher() -> str:
    beside_python = Path(sys.executable).parent / LAUNCHER
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(LAUNCHER)
    if found:
        return found
    raise StoreUnavailableError(
        f"no MongoDB URL is configured and the embedded server ({LAUNCHER}) is not installed: "
        'install "pystrument[embedded]" or set PYSTRUMENT_MONGODB_URL'
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: if we are killed without a chance to clean up, the store goes too (no orphans).
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedServer:
    """One SecantusDB process on 127.0.0.1, storing under `data_dir`."""

    def __init__(self, data_dir: Path, *, port: int | None = None, host: str = "127.0.0.1"):
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "secantusd.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server; return once it answers a ping, else raise StoreUnavailableError."""
        if self.running:
            return
        storage = self.data_dir / "db"
        storage.mkdir(parents=True, exist_ok=True)
        # An explicit (empty) config file turns off the launcher's auto-discovery of configs
        # in the user's home and /etc, so the embedded store behaves the same everywhere.
        config = self.data_dir / "secantusd.toml"
        if not config.exists():
            config.write_text("# pystrument embedded store: options are passed as flags\n")
        # --standalone: no single-node replica set, hence no oplog. Nothing here reads one
        # (no change streams, no transactions), and writing it cost the store an encoded
        # copy of every inserted or updated document: performance_records inserts went from
        # 1,144 to 712 µs of store CPU each (benchmarks/ingest_stages.py, docs/performance.md).
        cmd = [
            _find_launcher(),
            "--config", str(config),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(storage),
            "--log-level", "WARNING",
            "--standalone",
        ]  # fmt: skip
        logger.info("starting embedded store on %s:%s (data in %s)", self.host, self.port, storage)
        # The server has been seen to crash now and then while opening a data directory it
        # just closed; a process that dies during start-up gets another chance or two.
        for attempt in range(1, START_ATTEMPTS + 1):
            self._spawn(cmd)
            try:
                self._wait_ready(timeout)
                return
            except _ExitedDuringStart as exc:
                if attempt == START_ATTEMPTS:
                    raise
                logger.warning(
                    "embedded store exited during start-up (attempt %d of %d), retrying: %s",
                    attempt,
                    START_ATTEMPTS,
                    exc,
                )
                time.sleep(0.5)

    def _spawn(self, cmd: list[str]) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()

    def _wait_ready(self, timeout: float) -> None:
        client: MongoClient = MongoClient(self.url, serverSelectionTimeoutMS=250)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    raise _ExitedDuringStart(
                        f"embedded store exited with code {self._proc.returncode}; "
                        f"last log lines:\n{self._log_tail()}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise StoreUnavailableError(
                            f"embedded store did not answer within {timeout:.0f}s; "
                            f"last log lines:\n{self._log_tail()}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        logger.info("stopping embedded store (pid %s)", proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("embedded store did not stop in %.0fs; killing it", timeout)
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_data_dir() -> Path:
    """`PYSTRUMENT_DATA_DIR`, else `$XDG_DATA_HOME/pystrument` (~/.local/share/pystrument)."""
    explicit = os.environ.get("PYSTRUMENT_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pystrument"
