"""The receiver's own metrics, rendered in the Prometheus text exposition format (0.0.4).

Written by hand rather than with prometheus_client: a handful of counters and histograms do
not justify a dependency, and the format is small and stable. Served at `/metrics`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000)

Labels = tuple[tuple[str, str], ...]


def _label_text(labels: Labels) -> str:
    if not labels:
        return ""
    parts = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + ",".join(parts) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str):
        self.name, self.help = name, help_text
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        lines += [f"{self.name}{_label_text(k)} {_number(v)}" for k, v in items]
        return lines


class Histogram:
    """Cumulative buckets, sum and count per label set (Prometheus histogram semantics)."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]):
        self.name, self.help = name, help_text
        self.buckets = tuple(sorted(buckets))
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., +Inf, sum
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            series[index] += 1
            series[-1] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(sorted(labels.items())))
        return int(sum(series[:-1])) if series else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for labels, series in items:
            running = 0.0
            for bound, n in zip((*self.buckets, float("inf")), series[:-1], strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else _number(bound)
                bucket_labels = _label_text((*labels, ("le", le)))
                lines.append(f"{self.name}_bucket{bucket_labels} {_number(running)}")
            lines.append(f"{self.name}_sum{_label_text(labels)} {_number(series[-1])}")
            lines.append(f"{self.name}_count{_label_text(labels)} {_number(running)}")
        return lines


class Gauge:
    """A value read when scraped (e.g. spans in flight)."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float] = lambda: 0):
        self.name, self.help, self.read = name, help_text, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_number(self.read())}",
        ]


class ReceiverMetrics:
    """Everything `/metrics` shows about ingestion. One instance per receiver, shared by both
    transports and the group-commit writer."""

    def __init__(self) -> None:
        self.spans_accepted = Counter(
            "pystrument_receiver_accepted_spans_total", "Spans stored and acknowledged."
        )
        self.spans_rejected = Counter(
            "pystrument_receiver_rejected_spans_total",
            "Invalid spans rejected through partial_success (the rest of the request stored).",
        )
        self.spans_refused = Counter(
            "pystrument_receiver_refused_spans_total",
            "Spans of requests refused as a whole, by reason (the gRPC status name).",
        )
        self.requests = Counter(
            "pystrument_receiver_requests_total", "Export requests by transport and outcome."
        )
        self.export_latency = Histogram(
            "pystrument_receiver_export_duration_seconds",
            "Time from a decoded request to its answer (includes the store write).",
            LATENCY_BUCKETS,
        )
        self.batch_spans = Histogram(
            "pystrument_receiver_write_batch_spans",
            "Spans per group-commit write to the store.",
            SIZE_BUCKETS,
        )
        self.batch_requests = Histogram(
            "pystrument_receiver_write_batch_requests",
            "Export requests per group-commit write to the store.",
            SIZE_BUCKETS,
        )
        self.write_latency = Histogram(
            "pystrument_receiver_store_write_duration_seconds",
            "Duration of one group-commit write (both collections).",
            LATENCY_BUCKETS,
        )
        self.inflight_spans = Gauge(
            "pystrument_receiver_inflight_spans",
            "Spans admitted and not yet answered (bounded by max_inflight_spans).",
        )

    def render(self) -> str:
        """The whole exposition text."""
        lines: list[str] = []
        for metric in (
            self.spans_accepted,
            self.spans_rejected,
            self.spans_refused,
            self.requests,
            self.export_latency,
            self.batch_spans,
            self.batch_requests,
            self.write_latency,
            self.inflight_spans,
        ):
            lines += metric.render()
        return "\n".join(lines) + "\n"


router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: accepted/rejected/refused spans, latency, batch sizes."""
    ingestor = request.app.state.ingestor
    return PlainTextResponse(ingestor.metrics.render(), media_type=CONTENT_TYPE)
