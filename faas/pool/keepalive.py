"""Keep-alive policies: how long an idle environment stays, and when to pre-warm one.

Design notes: the fixed policy keeps every idle environment for ``idle_timeout_s``.
The adaptive policy is the hybrid histogram policy of "Serverless in the Wild"
(Shahrad et al., USENIX ATC '20): per function version it keeps a histogram of idle
times (from the end of its last invocation to the next arrival, in bins of
``bin_s`` up to ``bins`` bins). Once the histogram holds enough samples and its
shape is predictable (the bin counts' coefficient of variation is high, i.e. the idle
times cluster), the environment is released right after an invocation and pre-warmed
at the histogram's 5th percentile (less a 10 % margin), then kept until its 99th
percentile (plus 10 %). With too few samples, a flat histogram, or too many idle
times beyond its range, the policy falls back to the fixed keep-alive. Time is passed
in, so the policy is a pure function of what it was shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

HEAD_PERCENTILE = 0.05
TAIL_PERCENTILE = 0.99
MARGIN = 0.10
MIN_SAMPLES = 5
MIN_BIN_CV = 2.0  # below this the idle times are spread out: no pattern to exploit
MAX_OUT_OF_RANGE_SHARE = 0.5

FunctionKey = tuple[str, str]  # function name, version


@dataclass(frozen=True, slots=True)
class KeepAliveWindow:
    """After an invocation ends: release now and pre-warm after ``prewarm_s`` (if > 0),
    then keep the environment until ``prewarm_s + keep_alive_s`` after the end."""

    prewarm_s: float
    keep_alive_s: float

    @property
    def releases_at_once(self) -> bool:
        return self.prewarm_s > 0


@dataclass(slots=True)
class _IdleHistogram:
    counts: list[int]
    out_of_range: int = 0
    samples: int = 0
    last_end: float | None = None
    in_flight: int = 0
    cached: KeepAliveWindow | None = field(default=None)


class KeepAlivePolicy:
    """The fixed keep-alive, or the adaptive hybrid histogram policy over it."""

    __slots__ = ("_bin_s", "_bins", "_fixed", "_histograms", "is_adaptive")

    def __init__(self, idle_timeout_s: float, adaptive: bool, bin_s: float, bins: int) -> None:
        self._fixed = KeepAliveWindow(0.0, idle_timeout_s)
        self.is_adaptive = adaptive
        self._bin_s = bin_s
        self._bins = bins
        self._histograms: dict[FunctionKey, _IdleHistogram] = {}

    def invocation_started(self, key: FunctionKey, now: float) -> None:
        """An invocation of ``key`` arrived: if none was running, that ends an idle time."""
        if not self.is_adaptive:
            return
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = _IdleHistogram([0] * self._bins)
        if histogram.in_flight == 0 and histogram.last_end is not None:
            self._record(histogram, now - histogram.last_end)
        histogram.in_flight += 1

    def invocation_ended(self, key: FunctionKey, now: float) -> None:
        if not self.is_adaptive:
            return
        histogram = self._histograms.get(key)
        if histogram is None:
            return
        histogram.in_flight = max(0, histogram.in_flight - 1)
        if histogram.in_flight == 0:
            histogram.last_end = now

    def last_end(self, key: FunctionKey) -> float | None:
        """When the last invocation of ``key`` ended, if none runs now."""
        histogram = self._histograms.get(key)
        if histogram is None or histogram.in_flight:
            return None
        return histogram.last_end

    def forget(self, function_name: str) -> None:
        for key in [key for key in self._histograms if key[0] == function_name]:
            del self._histograms[key]

    def _record(self, histogram: _IdleHistogram, idle_s: float) -> None:
        histogram.samples += 1
        histogram.cached = None
        index = int(max(0.0, idle_s) // self._bin_s)
        if index >= self._bins:
            histogram.out_of_range += 1
        else:
            histogram.counts[index] += 1

    def window(self, key: FunctionKey) -> KeepAliveWindow:
        """The window to apply after an invocation of ``key`` ends."""
        histogram = self._histograms.get(key) if self.is_adaptive else None
        if histogram is None:
            return self._fixed
        if histogram.cached is None:
            histogram.cached = self._window_of(histogram)
        return histogram.cached

    def _window_of(self, histogram: _IdleHistogram) -> KeepAliveWindow:
        in_range = histogram.samples - histogram.out_of_range
        if histogram.samples < MIN_SAMPLES or in_range < MIN_SAMPLES:
            return self._fixed
        if histogram.out_of_range / histogram.samples > MAX_OUT_OF_RANGE_SHARE:
            return self._fixed
        if _coefficient_of_variation(histogram.counts) < MIN_BIN_CV:
            return self._fixed
        head = _percentile_bin(histogram.counts, HEAD_PERCENTILE)
        tail = _percentile_bin(histogram.counts, TAIL_PERCENTILE) + 1  # the bin's upper edge
        prewarm_s = head * self._bin_s * (1 - MARGIN)
        keep_alive_s = max(self._bin_s, tail * self._bin_s * (1 + MARGIN) - prewarm_s)
        return KeepAliveWindow(prewarm_s, keep_alive_s)


def _percentile_bin(counts: list[int], share: float) -> int:
    """The first bin at which the cumulative count reaches ``share`` of the total."""
    total = sum(counts)
    wanted = share * total
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= wanted and running > 0:
            return index
    return len(counts) - 1


def _coefficient_of_variation(counts: list[int]) -> float:
    mean = sum(counts) / len(counts)
    if mean == 0:
        return 0.0
    variance = sum((count - mean) ** 2 for count in counts) / len(counts)
    return math.sqrt(variance) / mean
