"""From a stopped profile to the entry span's attributes: summary, metrics and the tree.

The tree is aggregated from the frame records, pruned and encoded here (unless the request was
faster than the keep-if-slow threshold); a tree that cannot be built or does not fit is
counted and logged, and the other attributes are still returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from otel_pyinstrument_processor import attributes as attrs
from otel_pyinstrument_processor.active_profile import StoppedProfile
from otel_pyinstrument_processor.processor_stats import ProcessorStats, RateLimitedLog
from otel_pyinstrument_processor.pruning import PruneOptions
from otel_pyinstrument_processor.request_metrics import RequestMetrics
from otel_pyinstrument_processor.request_profile import merge_worker_records
from otel_pyinstrument_processor.tree_builder import aggregate_frame_records, top_of_tree
from otel_pyinstrument_processor.tree_encoding import encode_aggregated, encode_single_sample
from otel_pyinstrument_processor.wire import EncodedProfile, ProfileTooLargeError

_logger = logging.getLogger(__name__)


class ProfileAttributes:
    """Turns stopped profiles into span attributes under one processor's settings."""

    def __init__(
        self,
        *,
        min_share: float,
        slow_threshold: float,
        track_memory: bool,
        stats: ProcessorStats,
        log: RateLimitedLog,
    ) -> None:
        self._min_share = min_share
        self._slow_threshold = slow_threshold
        self._track_memory = track_memory
        # _add_more has something to do for every profile (else only for some: a call less).
        self._more_always = track_memory or slow_threshold > 0
        self._stats = stats
        self._count_empty = stats.counter("profiles_empty")
        self._log = log
        # One PruneOptions per set of library prefixes (in practice one per process), so
        # the pruning steps' per-file verdicts are kept across requests.
        self._prune_options: dict[tuple[str, ...], PruneOptions] = {}

    def of(
        self,
        profile: StoppedProfile,
        metrics: RequestMetrics,
        worker_records: Sequence[tuple[list[str], float]],
        max_bytes: Callable[[], int],
    ) -> dict[str, Any]:
        """The span attributes for ``profile``: sample count, CPU time, the request
        metrics, the interval and duration when the profile has samples, and the encoded
        tree (at most ``max_bytes()`` characters, asked only when there is a tree to
        encode)."""
        records = profile.records
        attributes: dict[str, Any] = {attrs.PROFILE_SAMPLE_COUNT: len(records)}
        if records or worker_records:
            # Without a sample they describe no profile (the span's own times say as much)
            # and each attribute costs the SDK ~1 µs to validate and store; in sampler
            # mode most short requests get no sample.
            attributes[attrs.PROFILE_INTERVAL] = profile.interval
            attributes[attrs.PROFILE_DURATION] = profile.duration
        if profile.cpu_time is not None:
            attributes[attrs.CPU_TIME] = profile.cpu_time
        if (metrics.counted or profile.stopped_early or self._more_always) and self._add_more(
            attributes, profile.duration, profile.stopped_early, metrics
        ):
            return attributes  # keep-if-slow: the metrics stay, the tree is never built
        if not records and not worker_records:
            self._count_empty()
            return attributes
        try:
            if len(records) == 1 and not worker_records:
                # Most sampled requests of a fast endpoint: a chain, from its stack's template
                # (encoded by the sampling thread as it took the sample, if it could).
                cap = max_bytes()
                encoded = profile.first_tree
                if encoded is None or len(encoded.tree) > cap:
                    stack, elapsed = records[0]
                    options = self._options(profile.library_prefixes)
                    encoded = encode_single_sample(
                        stack, elapsed, profile.start_call_stack, options, max_bytes=cap
                    )
                if encoded is not None:
                    attributes[attrs.PROFILE_TREE] = encoded.tree
                    attributes[attrs.PROFILE_FORMAT] = encoded.format
                    attributes[attrs.PROFILE_TRUNCATED] = encoded.truncated
                    return attributes
            aggregator = profile.aggregator
            if aggregator is not None and not worker_records:
                # The sampling thread aggregated as it sampled: finish what it had not.
                if aggregator.samples < len(records):
                    aggregator.add_all(records[aggregator.samples :])
                root = aggregator.finish()
            else:
                if worker_records:
                    records = merge_worker_records(records, worker_records)
                root = aggregate_frame_records(records, profile.start_call_stack)
            top = top_of_tree(root, profile.start_call_stack)
            if top is None:
                self._stats.increment("profiles_empty")
                return attributes
            # Folded, pruned and encoded in one walk over the builders: the bytes of
            # building CallTreeNodes, pruning and encoding them, in ~60 % of the time.
            encoded = encode_aggregated(
                top, self._options(profile.library_prefixes), max_bytes=max_bytes()
            )
        except ProfileTooLargeError as exc:
            self._stats.increment("profiles_dropped_oversize")
            self._log.warning("oversize", "pystrument: profile dropped: %s", exc)
            return attributes
        except Exception:
            # The metrics above are still worth attaching without the tree.
            self._stats.increment("errors")
            self._log.warning(
                "encode", "pystrument: could not build or encode a call tree", exc_info=True
            )
            return attributes
        attributes[attrs.PROFILE_TREE] = encoded.tree
        attributes[attrs.PROFILE_FORMAT] = encoded.format
        attributes[attrs.PROFILE_TRUNCATED] = encoded.truncated
        return attributes

    def first_sample_tree(
        self,
        record: tuple[list[str], float],
        start_call_stack: Sequence[str],
        library_prefixes: tuple[str, ...],
        max_bytes: int,
    ) -> EncodedProfile | None:
        """The encoded tree of a profile whose only sample is ``record``, as :meth:`of`
        encodes it, or None where :meth:`of` has to do more (see
        :func:`~tree_encoding.encode_single_sample`). For the sampling thread, as it takes
        a request's first sample."""
        stack, elapsed = record
        return encode_single_sample(
            stack, elapsed, start_call_stack, self._options(library_prefixes), max_bytes=max_bytes
        )

    def without_samples(
        self,
        cpu_time: float | None,
        started: float,
        stopped_early: bool,
        metrics: RequestMetrics,
    ) -> dict[str, Any]:
        """The span attributes of a profile that took no sample, started at ``started``
        (``time.perf_counter()``): what :meth:`of` returns for it, made directly (most
        sampler-mode requests are shorter than the interval and get no sample)."""
        attributes: dict[str, Any] = {attrs.PROFILE_SAMPLE_COUNT: 0}
        if cpu_time is not None:
            attributes[attrs.CPU_TIME] = cpu_time
        if (metrics.counted or stopped_early or self._more_always) and self._add_more(
            attributes, time.perf_counter() - started, stopped_early, metrics
        ):
            return attributes
        self._count_empty()
        return attributes

    def _add_more(
        self,
        attributes: dict[str, Any],
        duration: float,
        stopped_early: bool,
        metrics: RequestMetrics,
    ) -> bool:
        """Add the request metrics and what cut the profile short; True when the request
        was faster than keep-if-slow's threshold (no tree then)."""
        if metrics.counted or self._track_memory:
            metrics.add_span_attributes(attributes, track_memory=self._track_memory)
        if stopped_early:
            attributes[attrs.PROFILE_STOPPED_EARLY] = True
            self._stats.increment("profiles_stopped_early")
        if duration < self._slow_threshold:
            attributes[attrs.PROFILE_DROPPED_FAST] = True
            self._stats.increment("profiles_dropped_fast")
            return True
        return False

    def _options(self, library_prefixes: tuple[str, ...]) -> PruneOptions:
        options = self._prune_options.get(library_prefixes)
        if options is None:
            if len(self._prune_options) >= 16:
                self._prune_options.clear()
            options = PruneOptions(min_share=self._min_share, library_prefixes=library_prefixes)
            self._prune_options[library_prefixes] = options
        return options
