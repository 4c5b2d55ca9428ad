"""The app-side settings: keyword arguments > ``PYSTRUMENT_*`` environment > YAML file > defaults.

The keys are the seed's SDK keys (``project_key``, ``api_endpoint``, ``enabled``,
``sampling_rate``, ``max_trace_duration``, ``excluded_paths``, ``include_patterns``,
``async_send``, ``batch_size``, ``batch_timeout``, ``request_timeout``) plus pystrument's
sampling and metrics knobs. The YAML file (the seed's ``performance_config.yaml``) is named by
the ``config_file`` argument or ``PYSTRUMENT_SDK_CONFIG``. Django's ``PERFORMANCE_MONITOR``
dict (upper-case keys) goes through :meth:`ProfilerConfig.from_mapping`. A bad value raises
:class:`ConfigError` naming the key and where it came from; unknown keys are refused too, so a
typo cannot silently leave the default in place.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_CONFIG_FILE = "PYSTRUMENT_SDK_CONFIG"
ENV_PREFIX = "PYSTRUMENT_"

DENIED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
"""Headers that are never captured, whatever the allow-list says."""


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class ProfilerConfig:
    """Every app-side setting, validated. Times are seconds; rates are fractions in [0, 1]."""

    enabled: bool = True
    """False: no processor, no profiling (spans still export if the app traces)."""
    project_key: str | None = None
    """Sent to the receiver as ``authorization: Bearer <key>``."""
    api_endpoint: str | None = None
    """OTLP/gRPC endpoint of the receiver or a collector; unset = the OTEL_* variables."""
    sampling_rate: float = 1.0
    """Share of entry spans profiled (a fraction: the seed's ``10.0`` percent is ``0.1``)."""
    route_sampling_rates: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Per-route rates: glob pattern on the request path (``/api/reports/*``) -> rate.
    The first matching pattern wins over ``sampling_rate``."""
    excluded_paths: tuple[str, ...] = ()
    """Path prefixes never profiled (``/health``, ``/static``)."""
    include_patterns: tuple[str, ...] = ()
    """If set, only paths starting with one of these prefixes (or matching a glob) are profiled."""
    max_profiles_per_second: float | None = 10.0
    """Cap on profiles started per second (token bucket, burst = max(1, cap)); 0 or None =
    no cap (pass 0 to ``configure()``: there None means "not given")."""
    slow_threshold: float = 0.0
    """Keep-if-slow: a profile whose span is shorter than this keeps its metrics but its call
    tree is dropped before it is built or encoded."""
    max_trace_duration: float | None = 30.0
    """A profile running longer than this stops sampling (the tree keeps what it had);
    0 or None = no limit."""
    interval: float = 0.001
    """pyinstrument's sampling interval."""
    profiler_mode: str = "sampler"
    """``sampler`` (default): one background thread per process reads the stacks of threads
    serving a profiled request every ``sampler_interval`` (a few per cent of a profiled
    request's CPU; 10 ms resolution, Python frames only). ``pyinstrument``: pyinstrument's
    per-call hook samples the request's thread (1 ms resolution, C functions as nodes;
    roughly doubles the CPU of call-heavy code while it profiles). asyncio requests always
    use pyinstrument (a thread sampler cannot attribute coroutines)."""
    sampler_interval: float = 0.01
    """The sampling thread's interval in ``sampler`` mode."""
    sampler_backend: str = "auto"
    """Which thread reads the stacks in ``sampler`` mode: ``native`` (a thread of the
    package's C extension that never takes the GIL; CPython 3.11 on Linux), ``python`` (a
    Python thread reading ``sys._current_frames()``), or ``auto`` (default: native where it
    is built and can read the process's memory, else python)."""
    max_profile_bytes: int = 64 * 1024
    min_share: float = 0.005
    track_sql: bool = True
    """Count database child spans (``db.system``) on the entry span."""
    track_cache: bool = True
    """Count cache child spans (redis, memcached, ``cache.hit``) on the entry span."""
    track_memory: bool = True
    """Process RSS before/after and peak RSS of profiled requests (see docs/integration.md)."""
    slow_query_threshold: float = 0.1
    """A database span at least this long counts as a slow query."""
    capture_headers: tuple[str, ...] = ()
    """Request headers the OTel instrumentations may capture (Authorization, Cookie and
    Set-Cookie are always refused)."""
    async_send: bool = True
    """True: BatchSpanProcessor (background export); False: SimpleSpanProcessor."""
    batch_size: int = 512
    batch_timeout: float = 5.0
    request_timeout: float = 10.0
    service_name: str | None = None

    def __post_init__(self) -> None:
        _validate(self, "argument")

    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ProfilerConfig:
        """Defaults < YAML file (``config_file`` or ``PYSTRUMENT_SDK_CONFIG``) < environment <
        ``overrides`` (None values in ``overrides`` mean "not given")."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = config_file or environ.get(ENV_CONFIG_FILE)
        if path:
            values.update(_read_yaml(Path(path)))
        values.update(_from_environ(environ))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values, source="configuration")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "mapping") -> ProfilerConfig:
        """From a dict with these keys in any case (Django's ``PERFORMANCE_MONITOR`` uses
        upper case). Seed aliases: ``exclude_paths`` = ``excluded_paths``."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = _ALIASES.get(str(raw_key).lower(), str(raw_key).lower())
            if key in _IGNORED_KEYS:
                continue
            if key not in fields:
                raise ConfigError(f"{source}: unknown key {raw_key!r}")
            kwargs[key] = _coerce(key, value, source)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("argument", source, 1)) from None


# Seed keys that belong to the server side or are implied by OTel here; accepted, ignored.
_IGNORED_KEYS = frozenset(
    {"enable_ai_analysis", "ai_analysis_threshold", "track_templates", "track_request_body",
     "track_response_body"}
)  # fmt: skip
_ALIASES = {"exclude_paths": "excluded_paths", "endpoint": "api_endpoint"}
_BOOLS = {"enabled", "track_sql", "track_cache", "track_memory", "async_send"}
_INTS = {"max_profile_bytes", "batch_size"}
_LISTS = {"excluded_paths", "include_patterns", "capture_headers"}
_OPTIONAL_FLOATS = {"max_profiles_per_second", "max_trace_duration"}
_FLOATS = {
    "sampling_rate",
    "slow_threshold",
    "interval",
    "sampler_interval",
    "min_share",
    "slow_query_threshold",
    "batch_timeout",
    "request_timeout",
}
_STRINGS = {"project_key", "api_endpoint", "service_name", "profiler_mode", "sampler_backend"}
PROFILER_MODES = ("pyinstrument", "sampler")
SAMPLER_BACKENDS = ("auto", "native", "python")


def _coerce(key: str, value: Any, source: str) -> Any:
    """Turn text (env vars, YAML strings) into the field's type; leave typed values alone."""
    where = f"{source}: {key}"
    if key in _BOOLS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if key in _LISTS:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where} must be a list of strings, got {value!r}")
    if key == "route_sampling_rates":
        if isinstance(value, str):  # env: "/api/*=1.0,/health=0"
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ConfigError(f"{where} must look like '/api/*=0.5,/health=0', got {value!r}")
            value = {p.strip(): r.strip() for p, r in pairs}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must map path patterns to rates, got {value!r}")
        return {str(p): _number(f"{where}[{p!r}]", r) for p, r in value.items()}
    if key in _OPTIONAL_FLOATS:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return _number(where, value)
    if key in _FLOATS:
        return _number(where, value)
    if key in _INTS:
        number = _number(where, value)
        if number != int(number):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(number)
    if key in _STRINGS:
        if value is None or isinstance(value, str):
            return value or None
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return number


def _validate(config: ProfilerConfig, source: str) -> None:
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{source}: {key} {message}, got {getattr(config, key)!r}")

    def rate_ok(value: object) -> bool:
        return _is_real(value) and 0 <= value <= 1  # type: ignore[operator]

    if not rate_ok(config.sampling_rate):
        fail("sampling_rate", "must be a fraction in [0, 1] (10% is 0.1)")
    for pattern, rate in config.route_sampling_rates.items():
        if not rate_ok(rate):
            raise ConfigError(
                f"{source}: route_sampling_rates[{pattern!r}] must be in [0, 1], got {rate!r}"
            )
    for key in ("slow_threshold", "slow_query_threshold", "batch_timeout", "request_timeout"):
        value = getattr(config, key)
        if not _is_real(value) or value < 0:
            fail(key, "must be a number of seconds >= 0")
    if not _is_real(config.interval) or config.interval <= 0:
        fail("interval", "must be a number of seconds > 0")
    if not _is_real(config.sampler_interval) or config.sampler_interval <= 0:
        fail("sampler_interval", "must be a number of seconds > 0")
    if config.profiler_mode not in PROFILER_MODES:
        fail("profiler_mode", f"must be one of {', '.join(PROFILER_MODES)}")
    if config.sampler_backend not in SAMPLER_BACKENDS:
        fail("sampler_backend", f"must be one of {', '.join(SAMPLER_BACKENDS)}")
    if config.sampler_backend == "native":
        from otel_pyinstrument_processor.stack_sampler import native_unavailable_reason

        reason = native_unavailable_reason()
        if reason is not None:
            fail("sampler_backend", f"is not available here ({reason}); use auto or python")
    for key in ("max_profiles_per_second", "max_trace_duration"):
        value = getattr(config, key)
        if value is not None and (not _is_real(value) or value < 0):
            fail(key, "must be >= 0 (0 = no limit) or unset")
    if not _is_real(config.min_share) or not 0 <= config.min_share < 1:
        fail("min_share", "must be in [0, 1)")
    for key in ("max_profile_bytes", "batch_size"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            fail(key, "must be an integer > 0")
    for header in config.capture_headers:
        if header.strip().lower() in DENIED_HEADERS:
            raise ConfigError(
                f"{source}: capture_headers may not include {header!r}: "
                "Authorization, Cookie and Set-Cookie never leave the process"
            )


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ProfilerConfig):
        name = ENV_PREFIX + field.name.upper()
        raw = environ.get(name)
        if raw is not None and raw.strip():
            values[field.name] = _checked(field.name, _coerce(field.name, raw, name), name)
    # The profile interval kept its older variable name.
    raw_interval = environ.get("PYSTRUMENT_PROFILE_INTERVAL")
    if raw_interval and raw_interval.strip() and "interval" not in values:
        source = "PYSTRUMENT_PROFILE_INTERVAL"
        values["interval"] = _checked("interval", _coerce("interval", raw_interval, source), source)
    return values


def _checked(key: str, value: Any, source: str) -> Any:
    """Validate one value alone so that its error names the variable it came from."""
    ProfilerConfig.from_mapping({key: value}, source=source)
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # only when a file is given: the base import stays light

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    config = ProfilerConfig.from_mapping(data, source=str(path))
    return {key: data_value for key, data_value in _explicit(config, data).items()}


def _explicit(config: ProfilerConfig, data: Mapping[str, Any]) -> dict[str, Any]:
    """The validated values of the keys the file actually set (so env can override them)."""
    keys = {_ALIASES.get(str(k).lower(), str(k).lower()) for k in data}
    return {key: getattr(config, key) for key in keys if key not in _IGNORED_KEYS}
