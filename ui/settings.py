"""What the UI needs to know about its surroundings, read from the environment.

`pystrument ui` and `pystrument up` resolve the store the same way the server does
(PYSTRUMENT_MONGODB_URL, or the store of a running `pystrument up`) and pass the result to
the Streamlit process in these variables, so the UI itself depends on `storage_backend` only.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

DEFAULT_OTLP_ENDPOINT = "http://localhost:4317"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Which database the UI reads: hashable, so it keys Streamlit's caches (two tests or two
    deployments on different databases never share cached results)."""

    mongodb_url: str | None
    database: str
    data_dir: str | None


def store_location(environ: dict[str, str] | None = None) -> StoreLocation:
    """PYSTRUMENT_MONGODB_URL / PYSTRUMENT_MONGODB_DATABASE / PYSTRUMENT_DATA_DIR."""
    env = os.environ if environ is None else environ
    return StoreLocation(
        mongodb_url=env.get("PYSTRUMENT_MONGODB_URL") or None,
        database=env.get("PYSTRUMENT_MONGODB_DATABASE") or "pystrument",
        data_dir=env.get("PYSTRUMENT_DATA_DIR") or None,
    )


def otlp_endpoint() -> str:
    """The receiver's OTLP/gRPC endpoint to show in set-up snippets
    (PYSTRUMENT_UI_OTLP_ENDPOINT, set by `pystrument up`)."""
    return os.environ.get("PYSTRUMENT_UI_OTLP_ENDPOINT") or DEFAULT_OTLP_ENDPOINT


def admin_token() -> str | None:
    """PYSTRUMENT_ADMIN_TOKEN: what the UI asks for when it is reachable from other hosts."""
    return os.environ.get("PYSTRUMENT_ADMIN_TOKEN") or None


def is_loopback(address: str | None) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if not address or address == "localhost":
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
