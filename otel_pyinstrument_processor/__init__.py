"""pystrument's app-side library: pyinstrument call trees on OpenTelemetry spans.

Add :class:`PyinstrumentSpanProcessor` to a TracerProvider (or call :func:`configure`);
server-side code decodes the tree with :func:`decode_profile`. Importing this package starts
no thread and no profiler.
"""

from __future__ import annotations

from otel_pyinstrument_processor import attributes
from otel_pyinstrument_processor.calltree import CallTreeNode, flatten, iter_nodes
from otel_pyinstrument_processor.config import ConfigError, ProfilerConfig
from otel_pyinstrument_processor.monitor import monitor_performance, monitor_view
from otel_pyinstrument_processor.processor import PyinstrumentSpanProcessor
from otel_pyinstrument_processor.processor_stats import ProcessorStats
from otel_pyinstrument_processor.pruning import PruneOptions, prune
from otel_pyinstrument_processor.setup import configure
from otel_pyinstrument_processor.threadwork import (
    profile_sync_endpoints,
    profile_thread_work,
    thread_profile,
)
from otel_pyinstrument_processor.tree_builder import build_call_tree
from otel_pyinstrument_processor.wire import (
    PROFILE_FORMAT_V1,
    EncodedProfile,
    ProfileDecodeError,
    ProfileTooLargeError,
    decode_profile,
    encode_profile,
)

__all__ = [
    "PROFILE_FORMAT_V1",
    "CallTreeNode",
    "ConfigError",
    "EncodedProfile",
    "ProcessorStats",
    "ProfileDecodeError",
    "ProfileTooLargeError",
    "ProfilerConfig",
    "PruneOptions",
    "PyinstrumentSpanProcessor",
    "attributes",
    "build_call_tree",
    "configure",
    "decode_profile",
    "encode_profile",
    "flatten",
    "iter_nodes",
    "monitor_performance",
    "monitor_view",
    "profile_sync_endpoints",
    "profile_thread_work",
    "prune",
    "thread_profile",
]
