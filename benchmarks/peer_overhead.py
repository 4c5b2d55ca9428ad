"""Profiler overhead against the peers, paired batch by batch (settles "no worse than the best
peer at equal sampling" on a machine whose speed moves).

``processor_overhead.py`` runs each variant in its own process, one after another, and
compares their best rounds. On this VM that cannot tell a 50 µs difference on a 1.4 ms
request: the host runs a whole process at one speed or another (the same work takes 1.1 to
2.7 ms from one minute to the next), so two processes run minutes apart differ by more than
the profilers do. Here every variant's process starts first and waits; then, cycle after
cycle, each in turn (in a fresh random order per cycle) serves one short batch of requests
(``/fast``: 30, ~45 ms; ``/mixed``: 3, ~160 ms) while the others sleep. A variant and its
baseline then run within a second of each other, in every cycle: their difference in that
cycle is the profiler's cost under the machine's speed of that second, and the median over
many cycles, with a distribution-free 95 % confidence interval, is the figure. A process
also keeps a speed of its own (two OTel-only processes differed by ~40 µs a 1.4 ms request
over 100 cycles, the A/A row's interval excluding zero), so the workers are started afresh
``--epochs`` times over the run and the cycles pooled. By default
the requests of a batch run back to back (a saturated server); ``--utilization 0.5`` idles
after each request as long as it took, so a profiler's work while no request runs (an
always-on sampler samples idle threads too) counts as well.

The variants, the app and the calibrated view-like work are ``processor_overhead.py``'s
(its docstring describes them), and two ablations of ours: ``ours_nosample``, rate 1.0 with
a sampling interval of 10 s, every request profiled and none sampled (the per-request
bookkeeping alone); ``ours_notree``, sampled at 100 Hz with keep-if-slow at 10 s, so the
samples are taken and no tree is made (the sampling without the tree). CPU is the worker
process's, all threads (a sampling thread's cost is in it), over the batch; ``bg`` is the
part outside the request thread.

Then, per endpoint, ours against each peer: per cycle, our increment over OTel minus the
peer's increment over its own tracing (both measured in that cycle). A confidence interval
wholly below zero means ours is cheaper, one containing zero a tie at this run's resolution
(the A/A pair, OTel against itself, shows that resolution).

Run from the repository root (the peers need the `bench` extra):
    PYTHONPATH=. .venv/bin/python benchmarks/peer_overhead.py [--cycles 60]
    PYTHONPATH=. .venv/bin/python benchmarks/peer_overhead.py --variants ours_sampler,pyroscope
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import processor_overhead as bench

VARIANTS = (
    "otel",
    "otel_again",
    "ours_nosample",
    "ours_notree",
    "ours_sampler",
    "ours_pysampler",
    "sentry_traces",
    "sentry",
    "datadog_traces",
    "datadog",
    "pyroscope",
)
BASELINES = {**bench.PROFILER_BASELINES, "ours_nosample": "otel", "ours_notree": "otel"}
PEERS = ("pyroscope", "sentry", "datadog")
OURS = "ours_sampler"
BATCH = {"/fast": 30, "/mixed": 3}  # requests per variant per cycle


# -- the worker: one variant's app, serving batches on request ----------------------------


def serve(variant: str) -> None:
    """Build the app, warm it up, then run one batch per line read from stdin
    (``endpoint count``), answering each with one JSON line on stdout."""
    wsgi = bench.make_app(variant)
    from werkzeug.test import EnvironBuilder

    environs = {path: EnvironBuilder(path=path).get_environ() for path in BATCH}

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    for path, count in (("/fast", 200), ("/mixed", 6)):
        for _ in range(count):
            b"".join(wsgi(dict(environs[path]), start_response))
    for flush in bench._flush:
        flush()
    print("ready", flush=True)
    for line in sys.stdin:
        path, count_text, idle_text = line.split()
        count, idle = int(count_text), float(idle_text)
        environ = environs[path]
        bench._samples["count"] = 0
        latencies = []
        cpu_began = time.process_time()
        thread_began = time.thread_time()
        began = time.perf_counter()
        for _ in range(count):
            started = time.perf_counter()
            b"".join(wsgi(dict(environ), start_response))
            latency = time.perf_counter() - started
            latencies.append(latency)
            if idle:
                # Below saturation: the server idles `idle` times as long as it served
                # (what a profiler does while no request runs is then in the CPU too).
                time.sleep(latency * idle)
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        thread_cpu = time.thread_time() - thread_began
        # Samples are counted as spans are exported (ours) or as envelopes are sent
        # (Sentry): flushed after the CPU is read, as between requests in a server.
        for flush in bench._flush:
            flush()
        result = {
            "cpu": cpu / count,
            "bg": (cpu - thread_cpu) / count,
            "wall": elapsed / count,
            "samples": bench._samples["count"] / count,
            "latencies": latencies,
        }
        print(json.dumps(result), flush=True)


class Worker:
    """A variant's serving process, driven over its stdin and stdout."""

    def __init__(self, variant: str, env: dict[str, str]) -> None:
        self.variant = variant
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", variant],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def wait_ready(self) -> str | None:
        """None when ready, else why not (the worker's last line of stderr)."""
        assert self.process.stdout is not None and self.process.stderr is not None
        line = self.process.stdout.readline()
        if line.strip() == "ready":
            return None
        self.process.kill()
        lines = self.process.stderr.read().strip().splitlines()
        return (lines or ["exited"])[-1][:120]

    def batch(self, path: str, count: int, idle: float) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{path} {count} {idle}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.variant} died")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- statistics ---------------------------------------------------------------------------


def median_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Median and a distribution-free ~95 % confidence interval of it (order statistics of
    the binomial(n, 1/2) rank; exact enough for n ≥ 10)."""
    ordered = sorted(values)
    n = len(ordered)
    middle = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    half = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half) - 1)
    return middle, ordered[low], ordered[high]


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# -- the driver ---------------------------------------------------------------------------


def run(
    variants: Sequence[str], cycles: int, seed: int, utilization: float, epochs: int = 1
) -> dict[tuple[str, str], list[dict]]:
    """``cycles`` cycles over every variant, in ``epochs`` runs of fresh worker processes
    (a process keeps its own speed on this VM: the same variant in two processes differs by
    tens of µs a request, which pairing by cycle cannot cancel; fresh processes make that a
    spread to average over rather than a bias)."""
    env = {
        **os.environ,
        "PYINSTRUMENT_IGNORE_OVERHEAD_WARNING": "1",
        "PYTHONHASHSEED": "0",
        bench._UNITS_PER_MS_ENV: str(bench.units_per_ms()),
    }
    rng = random.Random(seed)
    idle = 1 / utilization - 1
    results: dict[tuple[str, str], list[dict]] = {}
    failed: set[str] = set()
    began = time.monotonic()
    done = 0
    for epoch in range(epochs):
        workers = {v: Worker(v, env) for v in variants if v not in failed}
        for variant, worker in list(workers.items()):
            reason = worker.wait_ready()
            if reason is not None:
                print(f"  {variant}: did not start: {reason}", file=sys.stderr)
                failed.add(variant)
                del workers[variant]
        try:
            for _ in range(cycles // epochs + (epoch < cycles % epochs)):
                for path, count in BATCH.items():
                    order = list(workers)
                    rng.shuffle(order)
                    for variant in order:
                        results.setdefault((variant, path), []).append(
                            workers[variant].batch(path, count, idle)
                        )
                done += 1
                if done % 10 == 0 or done == cycles:
                    print(
                        f"  cycle {done}/{cycles}, epoch {epoch + 1}/{epochs} "
                        f"({time.monotonic() - began:.0f} s)",
                        file=sys.stderr,
                    )
        finally:
            for worker in workers.values():
                worker.close()
    # A variant that failed to start in a later epoch has fewer cycles: its cycles would
    # pair with other cycles of its baseline, so it is left out altogether.
    return {key: value for key, value in results.items() if key[0] not in failed}


def report(results: dict[tuple[str, str], list[dict]], variants: Sequence[str]) -> None:
    for path in BATCH:
        base = results.get(("otel", path))
        if base is None:
            continue
        base_latencies = [x for batch in base for x in batch["latencies"]]
        base_p50 = percentile(base_latencies, 0.5)
        base_p99 = percentile(base_latencies, 0.99)
        base_wall = sum(b["wall"] for b in base)
        print(f"\n{path}  ({len(base)} cycles of {BATCH[path]} requests; µs of CPU a request)")
        print(
            f"{'variant':<16}{'cpu µs':>9}{'bg µs':>8}{'p50 x':>8}{'p99 x':>8}{'thru x':>8}"
            f"{'samples':>9}   {'over':<15}{'increment µs, median [95 % CI]':>32}"
        )
        for variant in variants:
            runs = results.get((variant, path))
            if runs is None:
                continue
            latencies = [x for batch in runs for x in batch["latencies"]]
            cpu = median_ci([b["cpu"] for b in runs])[0]
            bg = median_ci([b["bg"] for b in runs])[0]
            samples = sum(b["samples"] for b in runs) / len(runs)
            row = (
                f"{variant:<16}{cpu * 1e6:>9.0f}{bg * 1e6:>8.1f}"
                f"{percentile(latencies, 0.5) / base_p50:>8.3f}"
                f"{percentile(latencies, 0.99) / base_p99:>8.3f}"
                f"{base_wall / sum(b['wall'] for b in runs):>8.3f}{samples:>9.2f}"
            )
            baseline = BASELINES.get(variant)
            if baseline is not None and (baseline, path) in results:
                added = increments(results, variant, path)
                mid, low, high = median_ci(added)
                row += f"   {baseline:<15}{mid * 1e6:>+10.1f} [{low * 1e6:+.1f}, {high * 1e6:+.1f}]"
            print(row)
        print(f"\n{path}  ours ({OURS}) against each peer, µs a request (negative: ours cheaper)")
        for peer in PEERS:
            if (peer, path) not in results or (OURS, path) not in results:
                continue
            ours = increments(results, OURS, path)
            theirs = increments(results, peer, path)
            if not ours or not theirs:
                continue
            mid, low, high = median_ci([a - b for a, b in zip(ours, theirs, strict=True)])
            verdict = (
                "ours cheaper" if high < 0 else "peer cheaper" if low > 0 else "tie (CI spans 0)"
            )
            interval = f"[{low * 1e6:+.1f}, {high * 1e6:+.1f}]"
            print(f"  vs {peer:<12}{mid * 1e6:>+9.1f} {interval}  {verdict}")


def increments(results: dict[tuple[str, str], list[dict]], variant: str, path: str) -> list[float]:
    """Per cycle: the variant's CPU a request minus its baseline's, in the same cycle."""
    baseline = BASELINES[variant]
    mine, theirs = results.get((variant, path), []), results.get((baseline, path), [])
    return [a["cpu"] - b["cpu"] for a, b in zip(mine, theirs, strict=False)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=60, help="cycles (default 60, ~4 min)")
    parser.add_argument(
        "--variants", help=f"comma-separated subset of {','.join(VARIANTS)} (baselines added)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the per-cycle order")
    parser.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="fresh worker processes this many times over the run (default 4): a process "
        "keeps its own speed, so one process per variant biases the comparison",
    )
    parser.add_argument(
        "--utilization",
        type=float,
        default=1.0,
        help="share of the time the server is busy: 1.0 (default) serves requests back to "
        "back; 0.5 idles after each request as long as it took, and the idle time's CPU "
        "(a profiler that samples while no request runs) counts too",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    variants = bench.chosen_variants(args.variants, VARIANTS, BASELINES, parser.error)
    if not 0 < args.utilization <= 1:
        parser.error("--utilization must be in (0, 1]")
    if not 1 <= args.epochs <= args.cycles:
        parser.error("--epochs must be between 1 and --cycles")
    began = time.monotonic()
    print(
        f"work: {bench.units_per_ms()} records a millisecond (calibrated, no profiler); "
        f"server busy {args.utilization:.0%} of the time"
    )
    results = run(variants, args.cycles, args.seed, args.utilization, args.epochs)
    report(results, variants)
    print(f"\n(total {time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
