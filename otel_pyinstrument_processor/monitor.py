"""Profile one function or block as its own span: the seed's ``monitor_performance`` /
``monitor_view``, on OpenTelemetry.

``monitor_performance`` is a decorator (sync or async functions) and a context manager. It
starts a span marked ``pystrument.profile=True``, so the processor profiles it like an entry
span (sampling still applies) and the receiver stores it as a performance record. Inside a
request that is already profiled the span is an ordinary child: its frames are in the
request's tree already.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_pyinstrument_processor import attributes as attrs

F = TypeVar("F", bound=Callable[..., Any])
AttributeValue = str | bool | int | float


class monitor_performance:
    """Profile a function (``@monitor_performance()``) or a block (``with
    monitor_performance("nightly-import"):``) as a span of its own.

    ``name`` defaults to the function's qualified name; ``custom_tags`` become span
    attributes; ``tracer_provider`` defaults to the global one.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        custom_tags: Mapping[str, AttributeValue] | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.name = name
        self.custom_tags = dict(custom_tags or {})
        self.tracer_provider = tracer_provider
        self._spans: list[AbstractContextManager[trace.Span]] = []

    def _start(self, name: str) -> AbstractContextManager[trace.Span]:
        tracer = trace.get_tracer(__name__, tracer_provider=self.tracer_provider)
        return tracer.start_as_current_span(
            name,
            kind=SpanKind.INTERNAL,
            attributes={**self.custom_tags, attrs.PROFILE_REQUESTED: True},
        )

    def __call__(self, func: F) -> F:
        name = self.name or func.__qualname__
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._start(name):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._start(name):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> trace.Span:
        if self.name is None:
            raise TypeError("monitor_performance needs a name when used as a context manager")
        manager = self._start(self.name)
        self._spans.append(manager)
        return manager.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        manager = self._spans.pop()
        if exc is not None:
            trace.get_current_span().set_status(Status(StatusCode.ERROR, str(exc)))
        return manager.__exit__(exc_type, exc, tb)


monitor_view = monitor_performance
"""The seed's Django spelling: ``@monitor_view(custom_tags={"api_version": "v1"})``."""
