"""The Prometheus text rendering of the receiver's metrics."""

from __future__ import annotations

from collector_receiver.metrics import Counter, Histogram, ReceiverMetrics


def test_counter_and_histogram_text():
    counter = Counter("x_total", "Things.")
    counter.inc(2, transport="grpc")
    counter.inc(transport='h"t\\p')
    hist = Histogram("lat_seconds", "Latency.", (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        hist.observe(value)
    text = "\n".join(counter.render() + hist.render())
    assert '# TYPE x_total counter\nx_total{transport="grpc"} 2\n' in text
    assert 'x_total{transport="h\\"t\\\\p"} 1' in text
    assert 'lat_seconds_bucket{le="0.1"} 2' in text  # le is inclusive
    assert 'lat_seconds_bucket{le="1"} 3' in text
    assert 'lat_seconds_bucket{le="+Inf"} 4' in text
    assert "lat_seconds_sum 3.65" in text and "lat_seconds_count 4" in text


def test_receiver_metrics_render_every_family():
    metrics = ReceiverMetrics()
    metrics.inflight_spans.read = lambda: 7
    text = metrics.render()
    assert "pystrument_receiver_inflight_spans 7" in text
    assert text.count("# TYPE") == 9
