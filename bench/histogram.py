"""Latency histograms: HDR recording in microseconds, summarised as millisecond percentiles."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hdrh.histogram import HdrHistogram

# 1 µs .. 10 min at 3 significant figures: exact enough for p99.9, a few hundred KB at most.
_LOWEST_US = 1
_HIGHEST_US = 600_000_000
_SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """The latency figures every table shows, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class LatencyHistogram:
    """One HDR histogram of latencies; record in ms, read percentiles in ms."""

    __slots__ = ("_hdr", "_summary")

    def __init__(self) -> None:
        self._hdr = HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_FIGURES)
        # hdrh reads percentiles by walking its counts in Python (~0.1 s): keep the answer.
        self._summary: Percentiles | None = None

    def record_ms(self, value_ms: float) -> None:
        """Record one latency; values outside the trackable range are clamped to it."""
        micros = min(_HIGHEST_US, max(_LOWEST_US, round(value_ms * 1000)))
        self._hdr.record_value(micros)
        self._summary = None

    def add(self, other: LatencyHistogram) -> None:
        """Merge ``other``'s samples into this histogram."""
        self._hdr.add(other._hdr)
        self._summary = None

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count())

    def summary(self) -> Percentiles:
        """p50/p90/p99/p99.9/max (all zero when nothing was recorded)."""
        if self._summary is None:
            self._summary = self._compute()
        return self._summary

    def _compute(self) -> Percentiles:
        # One pass over the non-empty buckets: hdrh's own iterators cost ~0.1 s per call.
        total = self.count
        if total == 0:
            return Percentiles(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        hdr = self._hdr
        buckets = [(index, n) for index, n in enumerate(list(hdr.counts)) if n]
        targets = [max(1, int(p * total / 100 + 0.5)) for p in PERCENTILES]  # as hdrh rounds
        found: list[float] = []
        seen = 0
        weighted = 0.0
        for index, n in buckets:
            low = hdr.get_value_from_index(index)
            high = hdr.get_highest_equivalent_value(low)
            seen += n
            weighted += n * (low + high) / 2
            while len(found) < len(targets) and seen >= targets[len(found)]:
                found.append(high / 1000)
        p50, p90, p99, p999 = found
        return Percentiles(
            count=total,
            mean_ms=weighted / total / 1000,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            p999_ms=p999,
            max_ms=float(hdr.get_max_value()) / 1000,
        )

    def encode(self) -> str:
        """The compressed base64 HDR encoding, kept in result files for later re-analysis."""
        encoded = self._hdr.encode()
        return encoded.decode() if isinstance(encoded, bytes) else str(encoded)
