"""ProfilerConfig: kwargs > PYSTRUMENT_* env > YAML file > defaults; bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_pyinstrument_processor import PyinstrumentSpanProcessor, configure
from otel_pyinstrument_processor.config import ConfigError, ProfilerConfig
from otel_pyinstrument_processor.setup import ENV_SANITIZE_HEADERS, protect_headers

SEED_YAML = """
project_key: "psk_from_file"
api_endpoint: "http://127.0.0.1:14317"
enabled: true
sampling_rate: 0.1
max_trace_duration: 30.0
async_send: true
batch_size: 10
batch_timeout: 5
request_timeout: 30
excluded_paths:
  - "/health"
  - "/metrics"
enable_ai_analysis: true
ai_analysis_threshold: 1.0
"""


def test_seed_yaml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "performance_config.yaml"
    path.write_text(SEED_YAML)
    config = ProfilerConfig.load(path, environ={})
    assert config.project_key == "psk_from_file"
    assert config.sampling_rate == 0.1
    assert config.excluded_paths == ("/health", "/metrics")
    assert (config.batch_size, config.batch_timeout, config.request_timeout) == (10, 5.0, 30.0)


def test_precedence_kwargs_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sampling_rate: 0.1\nslow_threshold: 0.5\ninterval: 0.002\n")
    environ = {
        "PYSTRUMENT_SDK_CONFIG": str(path),
        "PYSTRUMENT_SAMPLING_RATE": "0.2",
        "PYSTRUMENT_EXCLUDED_PATHS": "/a, /b",
        "PYSTRUMENT_ROUTE_SAMPLING_RATES": "/api/*=1.0,/health=0",
    }
    config = ProfilerConfig.load(environ=environ, slow_threshold=0.3)
    assert config.sampling_rate == 0.2
    assert config.slow_threshold == 0.3
    assert config.interval == 0.002
    assert config.excluded_paths == ("/a", "/b")
    assert config.route_sampling_rates == {"/api/*": 1.0, "/health": 0.0}


def test_django_style_upper_case_mapping() -> None:
    config = ProfilerConfig.from_mapping(
        {
            "PROJECT_KEY": "k",
            "ENABLED": True,
            "SAMPLING_RATE": 0.3,
            "EXCLUDE_PATHS": ["/static/"],
            "INCLUDE_PATTERNS": ["/api/"],
            "TRACK_SQL": True,
            "TRACK_TEMPLATES": True,
        },
        source="settings.PERFORMANCE_MONITOR",
    )
    assert (config.project_key, config.sampling_rate) == ("k", 0.3)
    assert config.excluded_paths == ("/static/",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sampling_rate: 10.0\n", "sampling_rate must be a fraction"),
        ("max_trace_duration: -1\n", "max_trace_duration must be >= 0"),
        ("enabled: maybe\n", "enabled must be true or false"),
        ("excluded_paths: 5\n", "excluded_paths must be a list"),
        ("batch_size: 2.5\n", "batch_size must be an integer"),
        ("sampling_rte: 0.5\n", "unknown key 'sampling_rte'"),
        ("capture_headers: [Cookie]\n", "capture_headers may not include 'Cookie'"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_bad_file_values_name_the_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        ProfilerConfig.load(path, environ={})
    assert str(path) in str(info.value)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PYSTRUMENT_SLOW_THRESHOLD"):
        ProfilerConfig.load(environ={"PYSTRUMENT_SLOW_THRESHOLD": "-2"})
    with pytest.raises(ConfigError, match="PYSTRUMENT_MAX_PROFILES_PER_SECOND"):
        ProfilerConfig.load(environ={"PYSTRUMENT_MAX_PROFILES_PER_SECOND": "lots"})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ProfilerConfig.load(tmp_path / "nope.yaml", environ={})


def test_configure_takes_any_setting_and_disabled_leaves_the_profiler_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    provider = configure(set_global=False, slow_threshold=0.25, excluded_paths=["/health"])
    try:
        ours = provider._active_span_processor._span_processors[0]
        assert isinstance(ours, PyinstrumentSpanProcessor)
        assert ours._slow_threshold == 0.25
    finally:
        provider.shutdown()
    provider = configure(set_global=False, enabled=False)
    try:
        processors = provider._active_span_processor._span_processors
        assert not any(isinstance(p, PyinstrumentSpanProcessor) for p in processors)
    finally:
        provider.shutdown()
    with pytest.raises(ValueError, match="sampling_rate"):
        configure(set_global=False, sampling_rate=3)


def test_protect_headers_always_sanitizes_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SANITIZE_HEADERS, "x-api-key")
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", raising=False)
    protect_headers(("X-Request-Id",))
    import os

    sanitized = os.environ[ENV_SANITIZE_HEADERS].split(",")
    assert {"x-api-key", "authorization", "cookie", "set-cookie"} <= set(sanitized)
    assert os.environ["OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"] == "X-Request-Id"
