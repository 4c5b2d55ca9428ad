"""A/B of a profiled request's tree work: an earlier revision of the processor against this
checkout, in one process, on the same samples, interleaved.

The earlier revision's ``otel_pyinstrument_processor`` is taken with ``git archive`` into a
temporary directory and imported first; its modules are then set aside and this checkout's
package is imported (each module keeps the objects it imported, so both work side by side).
Both get the same pyinstrument-mode samples (a ~50 ms request at a 1 ms interval, optionally
under more frames) and are timed, interleaved, best of N (CPU time of this thread):

- ``aggregate``: the samples added one by one, as the pyinstrument mode's call hook adds them
  during the request (``StackAggregator.add_all`` with one record before the sixth pass,
  ``StackAggregator.add`` after, whichever the revision has);
- ``attributes``: ``ProfileAttributes.of`` on the stopped profile: finish the tree, prune,
  encode, and the other attributes (what runs at stop); the two revisions' attributes are
  checked equal first (the same bytes on the wire).

Run from the repository root:
    PYTHONPATH=. .venv/bin/python benchmarks/tree_encoding_ab.py --before 1ff0d92 [--depth 30]
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from processor_overhead import mixed_app_like_work

PACKAGE = "otel_pyinstrument_processor"
_MODULES = ("active_profile", "processor_stats", "profile_attributes", "request_metrics")


def load_revision(
    revision: str, into: str, names: tuple[str, ...] = (*_MODULES, "tree_builder")
) -> dict[str, ModuleType]:
    """The modules ``names`` of the processor package of ``revision`` (and the package
    itself, as ``""``), imported from ``into``, then set aside."""
    archive = subprocess.run(
        ["git", "archive", revision, PACKAGE], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)  # this repository's own archive
    sys.path.insert(0, into)
    try:
        modules = {name: importlib.import_module(f"{PACKAGE}.{name}") for name in names}
        modules[""] = importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(into)
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
    return modules


def load_checkout() -> dict[str, ModuleType]:
    names = (*_MODULES, "tree_builder")
    return {name: importlib.import_module(f"{PACKAGE}.{name}") for name in names}


def calls_of(
    modules: dict[str, ModuleType], records: list[tuple[list[str], float]], stack: list[str]
) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """(aggregate the samples one by one, attributes of the stopped profile) for one
    revision."""
    from pyinstrument.session import Session

    tree_builder = modules["tree_builder"]
    aggregator_class = tree_builder.StackAggregator
    one_by_one = hasattr(aggregator_class, "add")

    def aggregate() -> Any:
        aggregator = aggregator_class()
        if one_by_one:
            for sample, elapsed in records:
                aggregator.add(sample, elapsed)
        else:
            for record in records:
                aggregator.add_all((record,))
        return aggregator

    stats = modules["processor_stats"]
    attributes = modules["profile_attributes"].ProfileAttributes(
        min_share=0.005,
        slow_threshold=0.0,
        track_memory=False,
        stats=stats.ProcessorStats(),
        log=stats.RateLimitedLog(logging.getLogger("bench")),
    )
    metrics = modules["request_metrics"].RequestMetrics(track_memory=False)
    stopped = modules["active_profile"].StoppedProfile(
        records,
        stack,
        0.05,
        0.001,
        False,
        tuple(Session.current_sys_prefixes()),
        None,
        aggregate(),
    )
    return aggregate, lambda: attributes.of(stopped, metrics, [], lambda: 64 * 1024)


def per_call(fn: Callable[[], Any], n: int) -> float:
    started = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - started) / n * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--depth", type=int, default=0, help="more frames above the work")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (best of)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        before = load_revision(args.before, directory)
        after = load_checkout()
        hook_profile = importlib.import_module(f"{PACKAGE}.hook_profile")

        def nested(depth: int) -> None:
            return mixed_app_like_work() if depth == 0 else nested(depth - 1)

        mixed_app_like_work()  # the first call imports sqlite3: not a request's work
        hook = hook_profile.HookProfile(
            interval=0.001, strict=False, max_duration=None, use_timing_thread=None
        )
        hook.start(sys._getframe())
        nested(args.depth)
        records = hook.stop()
        stack = hook.start_call_stack()
        calls = {
            "before": calls_of(before, records, stack),
            "after": calls_of(after, records, stack),
        }
        assert calls["before"][1]() == calls["after"][1](), "the attributes differ"
        best = {(side, part): float("inf") for side in calls for part in (0, 1)}
        for _ in range(args.rounds):
            for side, pair in calls.items():
                for part, fn in enumerate(pair):
                    best[side, part] = min(best[side, part], per_call(fn, 100))
    print(
        f"{len(records)} samples, stacks {len(records[0][0])}-{max(len(s) for s, _ in records)}"
        f" deep; µs of CPU, best of {args.rounds} interleaved rounds"
    )
    print(f"{'':<12}{'before':>10}{'after':>10}{'ratio':>8}")
    for part, name in enumerate(("aggregate", "attributes")):
        old, new = best["before", part], best["after", part]
        print(f"{name:<12}{old:>10.1f}{new:>10.1f}{new / old:>8.2f}")
    old = best["before", 0] + best["before", 1]
    new = best["after", 0] + best["after", 1]
    print(f"{'both':<12}{old:>10.1f}{new:>10.1f}{new / old:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
