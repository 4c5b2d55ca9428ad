"""Profile work a request hands to a thread pool (FastAPI ``def`` endpoints, executors).

pyinstrument's call hook samples one thread per profile, and the entry span's profile runs
on the thread that started the span (the event loop, for ASGI apps). Work that runs in a worker
thread copies the request's context, so :func:`thread_profile` finds the request's running
profile there, samples the worker thread while the work runs, and hands the samples to the
entry span, whose tree shows them where the request awaited the thread pool.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from otel_pyinstrument_processor.hook_profile import HookProfile
from otel_pyinstrument_processor.request_profile import current_marker

_logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def thread_profile() -> Iterator[None]:
    """Sample this worker thread for the request whose context it runs in.

    Does nothing when no profile is running in this context, or when this is the thread the
    request's profiler already samples. Never raises for profiling failures.
    """
    marker = current_marker()
    if marker is None or marker.thread_id == threading.get_ident():
        yield
        return
    # Not aggregated: the samples are merged into the request's own (merge_worker_records).
    profile = HookProfile(
        interval=marker.interval,
        strict=False,
        max_duration=None,
        use_timing_thread=marker.use_timing_thread,
        aggregate_after=None,
    )
    try:
        profile.start(sys._getframe(2))
    except Exception:
        _logger.debug("pystrument: could not profile a worker thread", exc_info=True)
        yield
        return
    try:
        yield
    finally:
        try:
            # Each stack starts with the thread's frame, then the starting frame's callers
            # and itself (profile.start_codes): the worker's own frames follow.
            skip = 1 + len(profile.start_codes)
            marker.add_worker_records(
                [(stack[skip:], elapsed) for stack, elapsed in profile.stop()]
            )
        except Exception:
            _logger.debug("pystrument: could not stop a worker-thread profile", exc_info=True)


def profile_thread_work(func: F) -> F:
    """Wrap a synchronous function so that calls made in a worker thread are profiled as
    part of the calling request (see :func:`thread_profile`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with thread_profile():
            return func(*args, **kwargs)

    wrapper.__pystrument_thread_work__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def profile_sync_endpoints(app: Any) -> int:
    """Make a FastAPI app's ``def`` endpoints part of their request's profile.

    FastAPI runs them in its thread pool, out of sight of the event loop's profiler; this
    wraps each one with :func:`profile_thread_work`. Call it after the routes are added.
    Returns how many endpoints were wrapped.
    """
    wrapped = 0
    for route in getattr(app, "routes", ()):
        dependant = getattr(route, "dependant", None)
        call = getattr(dependant, "call", None)
        if call is None or getattr(call, "__pystrument_thread_work__", False):
            continue
        if inspect.iscoroutinefunction(call) or not inspect.isfunction(call):
            continue
        dependant.call = profile_thread_work(call)
        wrapped += 1
    return wrapped
