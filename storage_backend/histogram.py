"""A mergeable duration histogram with bounded relative error (a DDSketch-style layout).

Durations fall into logarithmic buckets: bucket ``i`` holds values in
``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + ALPHA) / (1 - ALPHA)``. Reporting a bucket
by ``2 * gamma**i / (gamma + 1)`` is then within ``ALPHA`` (1 %) of every value in it, so a
percentile read from the histogram is within 1 % (relative) of the exact nearest-rank
percentile, whatever the distribution and however many histograms were merged.

Why this layout: merging is adding counts per bucket, so writers push packed deltas
(``to_packed``) that readers add up (no read-modify-write, safe with N concurrent receivers);
the relative-error guarantee holds for any latency (1 ms and 60 s alike), unlike linear
buckets; and the bucket count stays small (1 ms..60 s spans ~550 buckets, a typical
endpoint-hour a few dozen), unlike storing raw samples. t-digest merges only approximately
and cannot be updated with ``$inc``; HDR histograms need a fixed range up front.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
MIN_DURATION = 1e-6
"""Durations below a microsecond (and zero) share the lowest bucket."""
# Packed form: a format byte (the array's item code), the first bucket index (int32 LE),
# then one little-endian count per bucket from there to the last non-empty one.
_PACKED_CODES = {1: "I", 2: "Q"}
_HEADER = struct.Struct("<Bi")


def bucket_of(duration_s: float) -> int:
    """The bucket index of a duration in seconds."""
    return math.ceil(math.log(max(duration_s, MIN_DURATION)) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The representative value of a bucket (within ALPHA of everything in it)."""
    return 2 * GAMMA**index / (GAMMA + 1)


class DurationHistogram:
    """Counts per bucket. Build with `add`, combine with `merge`, read with `quantile`."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: Mapping[int, int] | None = None):
        self.counts: dict[int, int] = {}
        self.total = 0
        if counts:
            for index, count in counts.items():
                self.counts[index] = self.counts.get(index, 0) + int(count)
                self.total += int(count)

    @classmethod
    def from_document(cls, doc: Mapping[str, int] | None) -> DurationHistogram:
        """From the stored form `{"<bucket>": count}` (MongoDB field names are strings)."""
        return cls({int(k): v for k, v in (doc or {}).items()})

    @classmethod
    def of(cls, durations: Iterable[float]) -> DurationHistogram:
        hist = cls()
        for d in durations:
            hist.add(d)
        return hist

    def add(self, duration_s: float, count: int = 1) -> None:
        index = bucket_of(duration_s)
        self.counts[index] = self.counts.get(index, 0) + count
        self.total += count

    def merge(self, other: DurationHistogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total

    def to_document(self) -> dict[str, int]:
        return {str(k): v for k, v in self.counts.items()}

    def to_packed(self) -> bytes:
        """The counts as one dense binary value: a stored histogram of a few hundred buckets
        costs a server and a driver one field instead of hundreds (see rollups.py)."""
        if not self.counts:
            return _HEADER.pack(1, 0)
        low, high = min(self.counts), max(self.counts)
        code = 1 if max(self.counts.values()) < 2**32 else 2
        dense = array(_PACKED_CODES[code], [self.counts.get(i, 0) for i in range(low, high + 1)])
        if sys.byteorder == "big":
            dense.byteswap()
        return _HEADER.pack(code, low) + dense.tobytes()

    def merge_packed(self, data: bytes) -> None:
        """Add the counts of a `to_packed` value; ValueError when it is not one."""
        if len(data) < _HEADER.size or data[0] not in _PACKED_CODES:
            raise ValueError("not a packed duration histogram")
        code, low = _HEADER.unpack_from(data)
        dense = array(_PACKED_CODES[code])
        dense.frombytes(bytes(data[_HEADER.size :]))
        if sys.byteorder == "big":
            dense.byteswap()
        counts = self.counts
        for offset, count in enumerate(dense):
            if count:
                counts[low + offset] = counts.get(low + offset, 0) + count
                self.total += count

    def top_bound(self, n: int) -> float | None:
        """A duration at or above which at least the `n` largest values lie (the lower edge
        of the bucket holding the n-th largest, so no more than one bucket's worth of extra
        values); None when the histogram holds fewer than `n`."""
        seen = 0
        for index in sorted(self.counts, reverse=True):
            seen += self.counts[index]
            if seen >= n:
                # Bucket i holds (GAMMA**(i-1), GAMMA**i]; a hair lower for float rounding.
                return GAMMA ** (index - 1) * (1 - 1e-9)
        return None

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (q in [0, 1]); None when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """`quantile` of each of `qs`, in one pass over the sorted buckets (a chart asks
        three per point, and a dense histogram has hundreds of buckets)."""
        qs = list(qs)
        if self.total == 0:
            return [None] * len(qs)
        wanted = sorted((max(1, math.ceil(q * self.total)), i) for i, q in enumerate(qs))
        out: list[float | None] = [bucket_value(max(self.counts))] * len(qs)
        seen = 0
        position = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            while position < len(wanted) and seen >= wanted[position][0]:
                out[wanted[position][1]] = bucket_value(index)
                position += 1
            if position == len(wanted):
                break
        return out


def exact_quantile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank q-quantile of raw values (the definition the histogram approximates)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
