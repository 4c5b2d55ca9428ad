"""Where each profiler mode puts a request's time when the request alternates short CPU
bursts with waits (a view that computes a little between database queries).

Not a speed benchmark: an accuracy check. A request runs ``reps`` times "compute for
``cpu`` ms, then wait ``io`` ms" (a thread-CPU spin in ``compute``, a sleep in ``wait_for_io``);
the true share of ``compute`` is ``cpu / (cpu + io)``. Each mode profiles 20 such requests,
and the time its samples put under ``compute`` and under ``wait_for_io`` is printed beside
the truth.

The sampling thread (``profiler_mode="sampler"``) reads the request's stack only when it
holds the GIL, and a thread that computes keeps the GIL until it blocks or until the
interpreter's switch interval (5 ms) makes it yield. So a CPU burst shorter than the switch
interval that ends in a wait is never seen: the sample lands where the thread blocked, and
the burst's time goes to the wait. pyinstrument's hook (``profiler_mode="pyinstrument"``)
runs on the request's own thread and has no such blind spot.

    PYTHONPATH=. .venv/bin/python benchmarks/sampler_attribution.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from otel_pyinstrument_processor.hook_profile import HookProfile
from otel_pyinstrument_processor.stack_sampler import StackSampler

PATTERNS = ((1, 1), (3, 2), (4, 6), (8, 2), (20, 5))  # (cpu ms, io ms) per burst
REQUESTS = 20
REPS = 10  # bursts a request


def compute(ms: float) -> int:
    end = time.thread_time() + ms / 1000
    spins = 0
    while time.thread_time() < end:
        spins += 1
    return spins


def wait_for_io(ms: float) -> None:
    time.sleep(ms / 1000)


def request(cpu_ms: float, io_ms: float) -> None:
    for _ in range(REPS):
        compute(cpu_ms)
        wait_for_io(io_ms)


def shares(records: list[tuple[list[str], float]]) -> dict[str, float]:
    """Seconds under compute, under wait_for_io, and elsewhere."""
    found = {"compute": 0.0, "wait_for_io": 0.0, "elsewhere": 0.0}
    for stack, elapsed in records:
        functions = {frame.split("\x00", 1)[0] for frame in stack}
        key = next((name for name in ("compute", "wait_for_io") if name in functions), None)
        found[key or "elsewhere"] += elapsed
    return found


def sampled(cpu_ms: float, io_ms: float) -> list[tuple[list[str], float]]:
    sampler = StackSampler()
    records: list[tuple[list[str], float]] = []
    try:
        for _ in range(REQUESTS):
            started = sampler.begin(sampler, 0.01, sys._getframe(), cpu_start=time.thread_time())
            request(cpu_ms, io_ms)
            records += sampler.end(started)
    finally:
        sampler.release(sampler)
    return records


def hooked(cpu_ms: float, io_ms: float) -> list[tuple[list[str], float]]:
    records: list[tuple[list[str], float]] = []
    for _ in range(REQUESTS):
        profile = HookProfile(
            interval=0.001, strict=False, max_duration=None, use_timing_thread=None
        )
        profile.start(sys._getframe())
        request(cpu_ms, io_ms)
        records += profile.stop()
    return records


def main() -> int:
    modes: dict[str, Callable[[float, float], list[tuple[list[str], float]]]] = {
        "sampler (100 Hz)": sampled,
        "pyinstrument (1 kHz)": hooked,
    }
    print(f"{REQUESTS} requests of {REPS} bursts each; share of the request's time under compute")
    print(f"{'cpu ms / io ms':<16}{'true':>8}" + "".join(f"{mode:>24}" for mode in modes))
    for cpu_ms, io_ms in PATTERNS:
        row = f"{f'{cpu_ms} / {io_ms}':<16}{cpu_ms / (cpu_ms + io_ms):>8.0%}"
        for profile in modes.values():
            found = shares(profile(cpu_ms, io_ms))
            total = sum(found.values()) or 1.0
            row += f"{found['compute'] / total:>24.0%}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
