"""Where each profiler mode puts a request's time when the request alternates short CPU
bursts with waits (a view that computes a little between database queries).

Not a speed benchmark: an accuracy check. A request runs ``REPS`` times "compute for
about ``cpu`` ms, then wait about ``io`` ms" (a thread-CPU spin in ``compute``, a sleep in
``wait_for_io``; each 0.5-1.5 times its mean); the truth is the wall time the bursts
spent in ``compute``, measured around the calls. Each mode profiles 20 such requests, and
the share of time its samples put under ``compute`` is printed beside that truth.

The sampling thread (``profiler_mode="sampler"``) reads the request's stack only when it
holds the GIL, and a thread that computes keeps the GIL until it blocks or until the
interpreter's switch interval (5 ms) makes it yield. So a CPU burst shorter than the switch
interval that ends in a wait is never seen: the sample lands where the thread blocked, and
the burst's time goes to the wait, unless the sample is told apart by the thread's CPU
clock (the ``[cpu]`` frame). The native reader (``sampler_backend: native``) reads the stack
at the due time without the GIL, and has no such blind spot; nor has pyinstrument's hook
(``profiler_mode="pyinstrument"``), which runs on the request's own thread.

    PYTHONPATH=. .venv/bin/python benchmarks/sampler_attribution.py
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

from otel_pyinstrument_processor.hook_profile import HookProfile
from otel_pyinstrument_processor.stack_sampler import StackSampler, native_reader

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
    # Each burst and wait 0.5-1.5 times its mean (seeded), as a view's are: strictly periodic
    # bursts would lock in phase with a 100 Hz sampler and be seen at one phase only.
    rng = _rng
    clock = time.perf_counter
    for _ in range(REPS):
        started = clock()
        compute(cpu_ms * (0.5 + rng.random()))
        computed = clock()
        wait_for_io(io_ms * (0.5 + rng.random()))
        _truth["compute"] += computed - started
        _truth["all"] += clock() - started


_rng = random.Random(5)
_truth = {"compute": 0.0, "all": 0.0}  # wall seconds in compute(), in the bursts in all


def shares(records: list[tuple[list[str], float]]) -> dict[str, float]:
    """Seconds under compute, in CPU the sampler did not see ([cpu]), and the rest."""
    found = {"compute": 0.0, "[cpu]": 0.0, "rest": 0.0}
    for stack, elapsed in records:
        functions = {frame.split("\x00", 1)[0] for frame in stack}
        key = next((name for name in ("compute", "[cpu]") if name in functions), "rest")
        found[key] += elapsed
    return found


def sampled(cpu_ms: float, io_ms: float, native: object = None) -> list[tuple[list[str], float]]:
    sampler = StackSampler(native)
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
        "python sampler (100 Hz)": sampled,
        "pyinstrument (1 kHz)": hooked,
    }
    native = native_reader()
    if native is not None:
        modes = {
            "native sampler (100 Hz)": lambda cpu, io: sampled(cpu, io, native),
            **modes,
        }
    print(
        f"{REQUESTS} requests of {REPS} bursts each: the share of their time each mode puts "
        "under compute()\n(in brackets: as CPU the sampler did not see, a [cpu] frame under "
        "compute()'s caller; the rest is waiting)"
    )
    print(f"{'cpu ms / io ms':<16}" + "".join(f"{mode + ' / true':>32}" for mode in modes))
    for cpu_ms, io_ms in PATTERNS:
        row = f"{f'{cpu_ms} / {io_ms}':<16}"
        for profile in modes.values():
            _truth.update(compute=0.0, all=0.0)
            found = shares(profile(cpu_ms, io_ms))
            total = sum(found.values()) or 1.0
            cell = f"{found['compute'] / total:.0%}"
            if found["[cpu]"]:
                cell += f" (+{found['[cpu]'] / total:.0%})"
            cell += f" / {_truth['compute'] / _truth['all']:.0%}"
            row += f"{cell:>32}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
