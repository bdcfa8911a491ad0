"""Prometheus metrics of one node, in a registry owned by that node (no process globals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

LabelledMetric = TypeVar("LabelledMetric", bound=MetricWrapperBase)

_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0,
)  # fmt: skip

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class VersionTally:
    """Invocations and errors per (function, version), for decisions inside the node
    (a deployment watching its target version's error rate)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[int]] = {}

    def record(self, function: str, version: str, is_error: bool) -> None:
        counts = self._counts.setdefault((function, version), [0, 0])
        counts[0] += 1
        counts[1] += is_error

    def read(self, function: str, version: str) -> tuple[int, int]:
        """(invocations, errors) so far."""
        invocations, errors = self._counts.get((function, version), (0, 0))
        return invocations, errors


class Metrics:
    """Every metric faas exports, labelled by function (and executed version where it applies)."""

    __slots__ = (
        "_children",
        "async_event_age",
        "async_events_dropped",
        "async_events_received",
        "cold_starts",
        "dead_letter_errors",
        "destination_delivery_failures",
        "duration",
        "errors",
        "event_source_batches",
        "event_source_iterator_age",
        "event_source_records",
        "event_source_records_discarded",
        "init_duration",
        "invocations",
        "provisioned_spillover",
        "registry",
        "schedule_invocations",
        "throttles",
        "versions",
    )

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.versions = VersionTally()
        # Labelled children by (metric, label values): labels() costs more than an update.
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        r = self.registry
        self.invocations = Counter(
            "faas_invocations", "Invocations run", ["function", "version", "alias"], registry=r
        )
        self.errors = Counter(
            "faas_errors", "Invocations that ended in a function error",
            ["function", "version", "alias"],
            registry=r,
        )  # fmt: skip
        self.throttles = Counter(
            "faas_throttles", "Invocations refused by a concurrency or scaling limit",
            ["function", "reason"], registry=r,
        )  # fmt: skip
        self.provisioned_spillover = Counter(
            "faas_provisioned_concurrency_spillover_invocations",
            "Invocations of a version with provisioned concurrency served on-demand",
            ["function", "version"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "faas_duration_seconds", "Handler duration", ["function"],
            buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.init_duration = Histogram(
            "faas_init_duration_seconds", "Init phase duration of new environments", ["function"],
            buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.cold_starts = Counter(
            "faas_cold_starts", "Invocations that started a new environment", ["function"],
            registry=r,
        )  # fmt: skip
        self.async_events_received = Counter(
            "faas_async_events_received", "Event invokes durably queued", ["function"], registry=r
        )
        self.async_events_dropped = Counter(
            "faas_async_events_dropped", "Event invokes discarded without success", ["function"],
            registry=r,
        )  # fmt: skip
        self.async_event_age = Histogram(
            "faas_async_event_age_seconds", "Time from enqueue to each invoke attempt",
            ["function"], buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.dead_letter_errors = Counter(
            "faas_dead_letter_errors", "Failed events that could not be sent to the dead-letter "
            "target", ["function"], registry=r,
        )  # fmt: skip
        self.destination_delivery_failures = Counter(
            "faas_destination_delivery_failures", "Invocation records that could not be sent to "
            "their destination", ["function"], registry=r,
        )  # fmt: skip
        self.schedule_invocations = Counter(
            "faas_schedule_invocations", "Event invokes enqueued by scheduled rules", ["rule"],
            registry=r,
        )  # fmt: skip
        self.event_source_records = Counter(
            "faas_event_source_records", "Records received by event source mappings",
            ["mapping", "function"], registry=r,
        )  # fmt: skip
        self.event_source_batches = Counter(
            "faas_event_source_batches", "Batches event source mappings handed to functions, "
            "by outcome (ok, partial, failed, not_invoked)", ["mapping", "function", "outcome"],
            registry=r,
        )  # fmt: skip
        self.event_source_records_discarded = Counter(
            "faas_event_source_records_discarded", "Stream records a mapping gave up on",
            ["mapping", "function"], registry=r,
        )  # fmt: skip
        self.event_source_iterator_age = Gauge(
            "faas_event_source_iterator_age_seconds", "Age of the newest record of a mapping's "
            "last batch when its processing finished (Lambda's IteratorAge)",
            ["mapping", "function"], registry=r,
        )  # fmt: skip

    def child(self, metric: LabelledMetric, *labels: str) -> LabelledMetric:
        """``metric.labels(*labels)``, looked up once and kept: for updates on hot paths."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child  # type: ignore[return-value]  # the child of a metric is of its class

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A node-wide gauge whose value is read at scrape time."""
        gauge = Gauge(name, help_text, registry=self.registry)
        gauge.set_function(read)

    def add_collector(self, collector: Collector) -> None:
        """A collector whose metric families are read at scrape time."""
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
