"""ProcessorStats: exact counters without a lock, read as attributes."""

from __future__ import annotations

import sys
import threading

import pytest

from otel_pyinstrument_processor import ProcessorStats
from otel_pyinstrument_processor import processor_stats as stats_module
from otel_pyinstrument_processor.processor_stats import COUNTERS


def hammer(stats: ProcessorStats, threads: int = 8, each: int = 20_000) -> None:
    """Increment two counters from many threads at once, with GIL hand-offs forced often."""
    count_started = stats.counter("profiles_started")
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(each):
            count_started()
            stats.increment("errors")

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    finally:
        sys.setswitchinterval(switch_interval)


def test_counters_are_exact_under_threads() -> None:
    stats = ProcessorStats()
    hammer(stats)
    assert stats.profiles_started == 8 * 20_000
    assert stats.errors == 8 * 20_000
    assert stats.profiles_attached == 0


def test_counters_are_exact_with_the_locked_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a build without the GIL gets: next() on a count is not atomic there.
    monkeypatch.setattr(stats_module, "_NEXT_IS_ATOMIC", False)
    stats = ProcessorStats()
    hammer(stats, threads=4, each=5_000)
    assert (stats.profiles_started, stats.errors) == (20_000, 20_000)


def test_snapshot_reads_without_counting_and_names_every_counter() -> None:
    stats = ProcessorStats()
    stats.increment("profiles_empty")
    stats.increment("profiles_empty")
    for _ in range(3):
        assert stats.profiles_empty == 2  # reading takes nothing from the count
    snapshot = stats.snapshot()
    assert list(snapshot) == list(COUNTERS)
    assert snapshot["profiles_empty"] == 2 and sum(snapshot.values()) == 2
    assert "profiles_empty=2" in repr(stats)


def test_unknown_counters_are_refused() -> None:
    stats = ProcessorStats()
    with pytest.raises(AttributeError, match="profiles_lost"):
        _ = stats.profiles_lost
    with pytest.raises(KeyError):
        stats.increment("profiles_lost")
