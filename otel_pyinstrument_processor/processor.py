"""PyinstrumentSpanProcessor: profiles entry spans and attaches the call tree to them.

The processor decides which spans to profile (sampling.py), starts and stops their profiles
(active_profile.py: pyinstrument's hook or the sampling thread), counts their child spans
into request metrics (request_metrics.py), turns the stopped profile into attributes
(profile_attributes.py) and writes them on the span as it ends, from the SDK's
``_on_ending`` hook (span_enrichment.py), so every processor's ``on_end`` and every
exporter sees them.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import threading
from asyncio import _get_running_loop as _running_loop
from collections.abc import Mapping, Sequence
from threading import get_ident
from time import thread_time
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor.active_profile import (
    ActiveProfile,
    ProfileModes,
    SampledProfile,
    StoppedProfile,
)
from otel_pyinstrument_processor.config import ProfilerConfig
from otel_pyinstrument_processor.processor_stats import ProcessorStats, RateLimitedLog
from otel_pyinstrument_processor.profile_attributes import ProfileAttributes
from otel_pyinstrument_processor.request_profile import (
    ProfileMarker,
    current_profile,
)
from otel_pyinstrument_processor.sampling import SamplingPolicy
from otel_pyinstrument_processor.span_enrichment import (
    ENDING_HOOK_WORKS,
    attribute_cap,
    install_end_hook,
    own_attributes,
    restore_end,
    set_profile_attributes,
    write_ending_attributes,
)
from otel_pyinstrument_processor.wire import DEFAULT_MAX_BYTES, EncodedProfile

_logger = logging.getLogger(__name__)

_MAX_TRACKED_CHILDREN = 10_000


class PyinstrumentSpanProcessor(SpanProcessor):
    """Profiles sampled SERVER spans (and spans started with ``pystrument.profile=True``)
    with pyinstrument and attaches the call tree and summary metrics as span attributes.

    Never raises into the application: failures are counted in :attr:`stats` and logged
    (rate-limited) through this module's logger.
    """

    def __init__(
        self,
        *,
        sampling_rate: float = 1.0,
        interval: float = 0.001,
        max_profile_bytes: int = DEFAULT_MAX_BYTES,
        min_share: float = 0.005,
        route_sampling_rates: dict[str, float] | None = None,
        excluded_paths: tuple[str, ...] | list[str] = (),
        include_patterns: tuple[str, ...] | list[str] = (),
        max_profiles_per_second: float | None = None,
        slow_threshold: float = 0.0,
        max_trace_duration: float | None = None,
        track_sql: bool = True,
        track_cache: bool = True,
        track_memory: bool = False,
        slow_query_threshold: float = 0.1,
        use_timing_thread: bool | None = None,
        profiler_mode: str = "sampler",
        sampler_interval: float = 0.01,
        sampler_backend: str = "auto",
    ) -> None:
        """Raise ValueError for a ``sampling_rate`` outside [0, 1], an ``interval`` that is
        not > 0, a ``max_profile_bytes`` that is not a positive int, or a ``min_share``
        outside [0, 1); the other settings are validated as in :class:`ProfilerConfig`
        (see :meth:`from_config` for their meaning). ``use_timing_thread``: None picks
        pyinstrument's timing thread when the system clock is slow to read, as measured by
        pyinstrument. ``profiler_mode``: ``"sampler"`` (the default: one background thread
        per process reads the stacks of threads serving a profiled request every
        ``sampler_interval`` seconds; cheap, coarser; asyncio requests still use
        pyinstrument) or ``"pyinstrument"`` (pyinstrument's per-call hook, ``interval``
        resolution, far costlier). ``sampler_backend``: ``"auto"`` (native where
        available), ``"native"`` or ``"python"``: which thread reads the stacks in sampler
        mode (see :class:`ProfilerConfig`)."""
        if not _is_number(sampling_rate) or not 0 <= sampling_rate <= 1:
            raise ValueError(f"sampling_rate must be a number in [0, 1], got {sampling_rate!r}")
        if not _is_number(interval) or interval <= 0:
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
        if isinstance(max_profile_bytes, bool) or not isinstance(max_profile_bytes, int):
            raise ValueError(f"max_profile_bytes must be an int, got {max_profile_bytes!r}")
        if max_profile_bytes <= 0:
            raise ValueError(f"max_profile_bytes must be > 0, got {max_profile_bytes!r}")
        if not _is_number(min_share) or not 0 <= min_share < 1:
            raise ValueError(f"min_share must be a number in [0, 1), got {min_share!r}")
        # One validation path for every setting: ProfilerConfig's.
        ProfilerConfig(
            profiler_mode=profiler_mode,
            sampler_interval=sampler_interval,
            sampler_backend=sampler_backend,
            route_sampling_rates=dict(route_sampling_rates or {}),
            excluded_paths=tuple(excluded_paths),
            include_patterns=tuple(include_patterns),
            max_profiles_per_second=max_profiles_per_second,
            slow_threshold=slow_threshold,
            max_trace_duration=max_trace_duration,
            slow_query_threshold=slow_query_threshold,
        )
        self._sampling_rate = float(sampling_rate)
        self._interval = float(interval)
        self._max_profile_bytes = max_profile_bytes
        self._min_share = float(min_share)
        self._policy = SamplingPolicy(
            sampling_rate=sampling_rate,
            route_sampling_rates=route_sampling_rates,
            excluded_paths=tuple(excluded_paths),
            include_patterns=tuple(include_patterns),
            max_profiles_per_second=max_profiles_per_second,
            rng=random.Random(),
        )
        self._slow_threshold = float(slow_threshold)
        self._max_trace_duration = max_trace_duration
        self._track_sql = track_sql
        self._track_cache = track_cache
        self._track_memory = track_memory
        self._track_children = track_sql or track_cache
        self._slow_query_threshold = float(slow_query_threshold)
        self._use_timing_thread = use_timing_thread
        self._profiler_mode = profiler_mode
        self._sampler_mode = profiler_mode == "sampler"
        self._modes = ProfileModes(
            mode=profiler_mode,
            interval=self._interval,
            sampler_interval=float(sampler_interval),
            sampler_backend=sampler_backend,
            max_duration=max_trace_duration,
            use_timing_thread=use_timing_thread,
            slow_threshold=self._slow_threshold,
        )
        # span_id of a child span -> the metrics of the profiled entry span it belongs to.
        self._children: dict[int, ProfileMarker] = {}
        # id(span) -> its running profile. Popping a span's entry (atomic) is what lets
        # exactly one of its end, a shutdown, or a second end finish it: no lock needed.
        self._active: dict[int, ActiveProfile] = {}
        # Attach from _on_ending (cheap), or, with an SDK that does not call it, from an
        # override of end() on the span instance (span_enrichment.py).
        self._ending_hook = ENDING_HOOK_WORKS
        self._is_shutdown = False
        self._marker = ProfileMarker.configured(
            interval=self._interval,
            use_timing_thread=use_timing_thread,
            track_memory=track_memory,
            slow_query_threshold=self._slow_query_threshold,
        )
        self._stats = ProcessorStats()
        self._count_started = self._stats.counter("profiles_started")
        self._log = RateLimitedLog(_logger)
        self._profile_attributes = ProfileAttributes(
            min_share=self._min_share,
            slow_threshold=self._slow_threshold,
            track_memory=track_memory,
            stats=self._stats,
            log=self._log,
        )
        # A one-sample tree is encoded by the sampling thread as it takes the sample.
        self._modes.encode_first_sample = self._encode_first_sample

    @classmethod
    def from_config(cls, config: ProfilerConfig) -> PyinstrumentSpanProcessor:
        """A processor with the sampling, profiling and metrics settings of ``config``."""
        return cls(
            sampling_rate=config.sampling_rate,
            interval=config.interval,
            max_profile_bytes=config.max_profile_bytes,
            min_share=config.min_share,
            route_sampling_rates=dict(config.route_sampling_rates),
            excluded_paths=config.excluded_paths,
            include_patterns=config.include_patterns,
            max_profiles_per_second=config.max_profiles_per_second,
            slow_threshold=config.slow_threshold,
            max_trace_duration=config.max_trace_duration,
            track_sql=config.track_sql,
            track_cache=config.track_cache,
            track_memory=config.track_memory,
            slow_query_threshold=config.slow_query_threshold,
            profiler_mode=config.profiler_mode,
            sampler_interval=config.sampler_interval,
            sampler_backend=config.sampler_backend,
        )

    @property
    def stats(self) -> ProcessorStats:
        """Counters: profiles started, attached, dropped, errors."""
        return self._stats

    @property
    def sampling_rate(self) -> float:
        return self._sampling_rate

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def profiler_mode(self) -> str:
        return self._profiler_mode

    @property
    def max_profile_bytes(self) -> int:
        return self._max_profile_bytes

    @property
    def min_share(self) -> float:
        return self._min_share

    # -- SpanProcessor -----------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Decide whether to profile ``span``; if so, start a profiler on this thread."""
        try:
            if self._modes.has_orphans:
                self._modes.reap_orphans()
            if self._is_shutdown:
                return
            current = current_profile.get()
            try:  # own_attributes, inline: this runs for every span
                attributes: Mapping[str, Any] | None = span._attributes._dict
            except AttributeError:
                attributes = own_attributes(span)
            # Profiled: SERVER spans and spans started with pystrument.profile=True (False
            # opts out). Inline: this runs for every span, child spans included.
            requested = attributes.get(attrs.PROFILE_REQUESTED) if attributes else None
            if requested is not True and (requested is False or span.kind is not SpanKind.SERVER):
                if current is not None and current.active and self._track_children:
                    if len(self._children) >= _MAX_TRACKED_CHILDREN:
                        self._children.clear()  # children that never ended: forget them
                    self._children[span.context.span_id] = current
                return
            if current is not None and current.active:
                self._stats.increment("profiles_skipped_nested")
                return
            policy = self._policy
            if not policy.profiles_every_span and not policy.should_profile(attributes, span.name):
                return
            self._start_profile(span)
        except Exception:
            self._error("start", "pystrument: could not start profiling a span")

    def _on_ending(self, span: Span) -> None:
        """Stop a profiled span's profile and write its attributes (the SDK calls this from
        ``end()`` on every processor, before any ``on_end``)."""
        state = self._active.pop(id(span), None)
        if state is not None:
            if state.profiler is None:
                self._finish_sampled(state)  # type: ignore[arg-type]
            else:
                self._finish(state)

    def on_end(self, span: ReadableSpan) -> None:
        """Count a child span of a profiled entry span into its request metrics (the tree
        itself was attached as the entry span ended, in _on_ending)."""
        if not self._children:
            return
        try:
            context = span.context
            metrics = self._children.pop(context.span_id, None) if context else None
            if metrics is None:
                return
            start, end = span.start_time, span.end_time
            duration = (end - start) / 1e9 if start is not None and end is not None else 0.0
            metrics.add_span(
                own_attributes(span),
                duration,
                track_sql=self._track_sql,
                track_cache=self._track_cache,
            )
        except Exception:
            self._error("child", "pystrument: could not count a child span")

    def shutdown(self) -> None:
        """Stop profiling new spans and stop the profilers still running.

        Profilers on this thread stop now; those on other threads stop when their span ends
        (pyinstrument stops a profiler only on its own thread). No tree is attached after
        shutdown.
        """
        self._is_shutdown = True
        here = threading.get_ident()
        # list() of a dict is one atomic copy; spans ending meanwhile pop their own entry.
        for key, state in list(self._active.items()):
            state.discard = True
            if state.thread_id == here and self._active.pop(key, None) is state:
                self._finish(state)
        self._modes.reap_orphans()
        self._modes.release()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here; always True."""
        return True

    # -- profiling ---------------------------------------------------------------------

    def _start_profile(self, span: Span) -> None:
        # Called from on_start only: the frames above are counted (see the anchor below).
        # The context marker, also the request's metrics (its class holds the settings).
        marker = self._marker(get_ident())
        modes = self._modes
        caller = None
        state: ActiveProfile | SampledProfile
        if self._sampler_mode and _running_loop() is None:
            state = modes.start_sampled(span, marker)  # (counts the frames up to here)
        else:
            caller = sys._getframe(2)  # on_start's caller
            state = modes.start(span, caller, marker)
        if not self._ending_hook:
            try:
                state.previous_end = install_end_hook(span, lambda: self._end_hooked(state))
            except BaseException:
                if state.profiler is None:
                    modes.end_sampled(state)  # type: ignore[arg-type]
                else:
                    modes.stop(state)  # type: ignore[arg-type]
                raise
        self._active[id(span)] = state  # a dict store is atomic: no processor lock
        state.token = current_profile.set(marker)
        if caller is not None:
            try:
                # Last: pyinstrument's per-call hook then times none of the bookkeeping above.
                modes.subscribe(state, caller)  # type: ignore[arg-type]
            except BaseException:
                self._active.pop(id(span), None)
                current_profile.reset(state.token)
                if not self._ending_hook:
                    restore_end(span, state.previous_end)
                raise
        self._count_started()

    def _end_hooked(self, state: ActiveProfile | SampledProfile) -> None:
        # end() overridden on the span instance (an SDK without _on_ending).
        if self._active.pop(id(state.span), None) is state:
            self._finish(state)

    def _finish(self, state: ActiveProfile | SampledProfile) -> None:
        """Stop the profile and attach the results to the span; never raises. Called once
        per profile, by whoever popped it from ``_active``."""
        if state.profiler is None:
            self._finish_sampled(state)  # type: ignore[arg-type]
            return
        # First: pyinstrument's per-call hook then times none of the bookkeeping below.
        stop_failed = False
        try:
            stopped = self._modes.stop(state)
        except Exception:
            self._error("stop", "pystrument: could not stop the profiler")
            stopped, stop_failed = None, True
        state.marker.active = False
        try:
            self._leave(state)
            if stop_failed or state.discard:
                return
            if stopped is None:
                self._stats.increment("profiles_dropped_cross_thread")
                self._log.warning(
                    "cross_thread",
                    "pystrument: span %r ended on another thread than it started on; its "
                    "profile is dropped",
                    state.span.name,
                )
                return
            self._attach(state.span, self._attributes_of(state, stopped))
        except Exception:
            self._error("finish", "pystrument: could not finish a span's profile")

    def _finish_sampled(self, state: SampledProfile) -> None:
        """:meth:`_finish` for a profile of the sampling thread (it can end on any thread).
        A request without a sample, most requests shorter than the sampling interval, goes
        from the sampler straight to its attributes: no StoppedProfile, no tree work."""
        modes = self._modes
        try:
            # (modes.end_sampled, a call less: the sampler that started it is set.)
            records = modes.sampler.end(state)  # type: ignore[union-attr]
        except Exception:
            self._error("stop", "pystrument: could not stop the profiler")
            records = None
        cpu_time = thread_time() - state.cpu_start if get_ident() == state.thread_id else None
        marker = state.marker
        marker.active = False
        try:
            self._leave(state)
            if records is None or state.discard:
                return
            if records or marker.worker_records:
                stopped = modes.stopped_sampled(state, records, cpu_time)
                attributes = self._attributes_of(state, stopped)
            else:
                attributes = self._profile_attributes.without_samples(
                    cpu_time, state.started, state.stopped_early, state.marker
                )
                if self._ending_hook:  # no tree: none of _attach's checks apply
                    write_ending_attributes(state.span, attributes, attrs.PROFILE_TREE)
                    return
            self._attach(state.span, attributes)
        except Exception:
            self._error("finish", "pystrument: could not finish a span's profile")

    def _leave(self, state: ActiveProfile | SampledProfile) -> None:
        """Undo what starting the profile did to the span and the context."""
        if not self._ending_hook:
            restore_end(state.span, state.previous_end)  # undo the end() override
        token, state.token = state.token, None
        if token is not None:
            # contextlib.suppress would cost ~1 µs a request here.
            try:  # noqa: SIM105
                current_profile.reset(token)
            except (ValueError, RuntimeError):
                pass  # ended in another context: the marker stays there, reads as finished
        if self._modes.has_orphans:
            self._modes.reap_orphans()

    def _attributes_of(
        self, state: ActiveProfile | SampledProfile, stopped: StoppedProfile
    ) -> dict[str, Any]:
        marker = state.marker
        return self._profile_attributes.of(
            stopped,
            marker,
            marker.worker_records,
            lambda: attribute_cap(state.span, self._max_profile_bytes),
        )

    def _encode_first_sample(
        self, record: tuple[list[str], float], start_call_stack: Sequence[str]
    ) -> EncodedProfile | None:
        # On the sampling thread: the request's end checks it against the span's limits.
        return self._profile_attributes.first_sample_tree(
            record, start_call_stack, self._modes.library_prefixes(), self._max_profile_bytes
        )

    def _attach(self, span: Span, attributes: dict[str, Any]) -> None:
        try:
            if self._ending_hook:
                kept = write_ending_attributes(span, attributes, attrs.PROFILE_TREE)
            else:
                kept = set_profile_attributes(span, attributes, attrs.PROFILE_TREE)
        except Exception:
            self._error("attach", "pystrument: could not set profile attributes on a span")
            return
        if not kept:
            self._stats.increment("errors")
            self._log.warning("attach_lost", "pystrument: the span did not keep the call tree")
        elif attrs.PROFILE_TREE in attributes:
            self._stats.increment("profiles_attached")

    def _error(self, kind: str, message: str) -> None:
        self._stats.increment("errors")
        self._log.warning(kind, message, exc_info=True)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
