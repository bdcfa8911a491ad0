"""The load generator: closed-loop clients and open-loop arrivals, over either HTTP client.

Design notes: closed loop runs N clients that each send the next request as soon as
the previous answer arrives, so it measures throughput at a fixed concurrency. Open
loop sends on a fixed schedule whatever the server does, and measures each latency
from the request's *intended* send time: if the server stalls, the requests that
should have gone out meanwhile are charged the wait (no coordinated omission). A
separate service-time histogram (from the actual send) shows how much of the
latency is queueing in the generator. Both loops are bounded: they stop issuing at
the deadline and give in-flight requests ``drain_s`` before cancelling them, which
are then counted as unfinished rather than silently dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bench.clients import ClientFailure, LoadClient, Response
from bench.histogram import LatencyHistogram


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One kind of request: where it goes, what it carries, which status means success."""

    url: str
    body: bytes = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    expect_status: int = 200
    # Builds a fresh body per request (e.g. with a send timestamp); overrides ``body``.
    make_body: Callable[[], bytes] | None = None


ResponseHook = Callable[[Response], None]
FUNCTION_ERROR_HEADER = "x-amz-function-error"  # X-Amz-Function-Error, in lower case


@dataclass(slots=True)
class LiveStats:
    """Counters the generator bumps and the progress display reads while a run goes on."""

    completed: int = 0
    errors: int = 0
    last_latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured."""

    mode: str  # "closed" or "open"
    concurrency: int  # clients (closed) or the in-flight cap (open)
    offered_rate: float | None  # requests/s the open loop scheduled
    completed: int  # answered with the expected status
    errors: dict[str, int]  # other statuses, function errors and client failures, by name
    error_samples: dict[str, str]  # the first answer (or message) of each kind of error
    unfinished: int  # still unanswered (or never sent) when the drain ran out
    elapsed_s: float
    histogram: LatencyHistogram  # open loop: from the intended send time
    service_histogram: LatencyHistogram  # from the actual send
    generator_cpu_s: float

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def generator_cpu_fraction(self) -> float:
        """Share of one core the generator used: near 1.0 means the generator was the limit."""
        return self.generator_cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def send_once(client: LoadClient, spec: RequestSpec) -> Response:
    """Send one request and time it.

    Raises:
        ClientFailure: the request failed below HTTP.
    """
    body = spec.make_body() if spec.make_body is not None else spec.body
    return await client.post(spec.url, body, spec.headers)


class _Tally:
    """The mutable bookkeeping of one run, shared by its client tasks."""

    __slots__ = (
        "completed", "error_samples", "errors", "histogram", "hook", "in_flight", "service",
        "stats",
    )  # fmt: skip

    def __init__(self, stats: LiveStats | None, hook: ResponseHook | None) -> None:
        self.completed = 0
        self.in_flight = 0
        self.errors: Counter[str] = Counter()
        self.error_samples: dict[str, str] = {}
        self.histogram = LatencyHistogram()
        self.service = LatencyHistogram()
        self.stats = stats
        self.hook = hook

    async def send(self, client: LoadClient, spec: RequestSpec, intended: float | None) -> None:
        """Send one request and record it; ``intended`` is the open loop's scheduled time."""
        self.in_flight += 1
        try:
            response = await send_once(client, spec)
        except ClientFailure as exc:
            self._fail(exc.kind, str(exc))
            return
        finally:
            self.in_flight -= 1
        if response.status != spec.expect_status:
            self._fail(f"HTTP {response.status}", response.body[:300].decode(errors="replace"))
            return
        if FUNCTION_ERROR_HEADER in response.headers:
            # Lambda answers 200 when the handler failed; the header says so.
            self._fail("function error", response.body[:300].decode(errors="replace"))
            return
        latency_ms = response.latency_ms
        if intended is not None:
            latency_ms = (time.perf_counter() - intended) * 1000
        self.completed += 1
        self.histogram.record_ms(latency_ms)
        self.service.record_ms(response.latency_ms)
        if self.stats is not None:
            self.stats.completed += 1
            self.stats.last_latency_ms = latency_ms
        if self.hook is not None:
            self.hook(response)

    def _fail(self, kind: str, sample: str) -> None:
        self.errors[kind] += 1
        self.error_samples.setdefault(kind, sample)
        if self.stats is not None:
            self.stats.errors += 1


async def run_closed(
    client: LoadClient,
    spec: RequestSpec,
    concurrency: int,
    duration_s: float,
    *,
    drain_s: float = 30.0,
    stats: LiveStats | None = None,
    hook: ResponseHook | None = None,
    stop: asyncio.Event | None = None,
) -> LoadResult:
    """``concurrency`` clients send back-to-back requests for ``duration_s`` (or until ``stop``).

    Throughput counts every answer, including those that arrive during the drain,
    over the time until the last one arrived.
    """
    loop = asyncio.get_running_loop()
    tally = _Tally(stats, hook)
    deadline = loop.time() + duration_s

    async def one_client() -> None:
        while loop.time() < deadline and not (stop is not None and stop.is_set()):
            await tally.send(client, spec, None)

    cpu_started = time.process_time()
    started = time.perf_counter()
    unfinished = 0
    try:
        async with asyncio.timeout(duration_s + drain_s), asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(one_client())
    except TimeoutError:
        unfinished = tally.in_flight
    return LoadResult(
        mode="closed",
        concurrency=concurrency,
        offered_rate=None,
        completed=tally.completed,
        errors=dict(tally.errors),
        error_samples=tally.error_samples,
        unfinished=unfinished,
        elapsed_s=time.perf_counter() - started,
        histogram=tally.histogram,
        service_histogram=tally.service,
        generator_cpu_s=time.process_time() - cpu_started,
    )


async def run_open(
    client: LoadClient,
    spec: RequestSpec,
    rate: float,
    duration_s: float,
    *,
    max_in_flight: int = 256,
    drain_s: float = 10.0,
    stats: LiveStats | None = None,
    hook: ResponseHook | None = None,
) -> LoadResult:
    """Send ``rate`` requests/s for ``duration_s`` on a fixed schedule.

    At most ``max_in_flight`` are outstanding; a request waiting for a slot is still
    charged from its intended send time. Throughput is answers over the time until
    the last one arrived (so it falls below ``rate`` when the server cannot keep up).
    """
    tally = _Tally(stats, hook)
    slots = asyncio.Semaphore(max_in_flight)
    total = max(1, int(rate * duration_s))
    interval = 1.0 / rate
    issued = 0

    async def one(intended: float) -> None:
        async with slots:
            await tally.send(client, spec, intended)

    cpu_started = time.process_time()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(duration_s + drain_s), asyncio.TaskGroup() as group:
            while issued < total:
                now = time.perf_counter()
                while issued < total and started + issued * interval <= now:
                    group.create_task(one(started + issued * interval))
                    issued += 1
                await asyncio.sleep(max(0.0, started + issued * interval - time.perf_counter()))
    except TimeoutError:
        pass
    answered = tally.completed + sum(tally.errors.values())
    return LoadResult(
        mode="open",
        concurrency=max_in_flight,
        offered_rate=rate,
        completed=tally.completed,
        errors=dict(tally.errors),
        error_samples=tally.error_samples,
        unfinished=total - answered,
        elapsed_s=time.perf_counter() - started,
        histogram=tally.histogram,
        service_histogram=tally.service,
        generator_cpu_s=time.process_time() - cpu_started,
    )
