"""The receiver's settings: validated, documented, and reachable by env var and YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from pystrument.settings import ServerSettings, load_settings

DOCS = Path(__file__).parents[2] / "docs"


def test_every_setting_is_in_the_configuration_table():
    table = (DOCS / "configuration.md").read_text()
    for name in ServerSettings.model_fields:
        assert f"`{name}`" in table and f"`PYSTRUMENT_{name.upper()}`" in table, name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("http_max_body_bytes", 10),
        ("ingest_max_inflight_spans", 0),
        ("ingest_max_batch_spans", 0),
        ("ingest_writers", 0),
        ("ingest_retry_after_seconds", 0),
        ("ingest_admission_wait_seconds", -1),
        ("max_span_attributes", 0),
        ("grpc_keepalive_seconds", -1),
        ("log_format", "xml"),
        ("api_rate_limit_per_second", -1),
        ("api_rate_limit_burst", 0),
    ],
)
def test_invalid_receiver_values_are_refused_naming_the_key(key, value):
    with pytest.raises(SystemExit) as err:
        load_settings(**{key: value})
    assert key in str(err.value)


def test_receiver_limits_from_env_and_yaml(tmp_path, monkeypatch):
    config = tmp_path / "pystrument.yaml"
    config.write_text("ingest_max_inflight_spans: 5000\nhttp_max_body_bytes: 4096\n")
    monkeypatch.setenv("PYSTRUMENT_CONFIG", str(config))  # restored after the test
    monkeypatch.setenv("PYSTRUMENT_INGEST_WRITERS", "3")
    monkeypatch.setenv("PYSTRUMENT_LOG_FORMAT", "json")
    settings = load_settings(str(config))
    assert settings.ingest_max_inflight_spans == 5000
    assert settings.http_max_body_bytes == 4096
    assert settings.ingest_writers == 3 and settings.log_format == "json"


def test_every_receiver_limit_has_a_flag():
    from pystrument.cli import build_parser

    up = build_parser()._subparsers._group_actions[0].choices["up"]  # the `up` subcommand
    flags = {a.dest for a in up._actions}
    for name in ServerSettings.model_fields:
        if name.startswith(("grpc_", "http_", "ingest_", "max_")) and name != (
            "http_cors_allowed_origins"  # a list: YAML or the variable
        ):
            assert name in flags, name


def test_receiver_flags_reach_the_settings(monkeypatch):
    from pystrument.cli import _settings, build_parser

    monkeypatch.delenv("PYSTRUMENT_CONFIG", raising=False)
    values = {
        "grpc_max_workers": "4",
        "grpc_max_concurrent_streams": "7",
        "grpc_keepalive_seconds": "30",
        "http_max_body_bytes": "4096",
        "ingest_max_inflight_spans": "500",
        "ingest_max_batch_spans": "100",
        "ingest_writers": "3",
        "ingest_retry_after_seconds": "2.5",
        "ingest_admission_wait_seconds": "0.25",
        "max_span_attributes": "64",
        "log_format": "json",
    }
    argv = ["up"] + [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", v)]
    settings = _settings(build_parser().parse_args(argv))
    for key, value in values.items():
        actual = getattr(settings, key)
        assert actual == (value if isinstance(actual, str) else type(actual)(value)), key
