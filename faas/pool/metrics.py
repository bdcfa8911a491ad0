"""Concurrency metrics, read from the pool's books at scrape time (nothing per invoke)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from faas.pool.manager import PoolManager


class _PoolCollector:
    """A prometheus collector whose families are read from the pool at scrape time."""

    def __init__(self, pool: PoolManager) -> None:
        self._pool = pool

    def describe(self) -> list[Metric]:
        return []  # families are only known at scrape time


class ProvisionedCollector(_PoolCollector):
    """ProvisionedConcurrentExecutions and ProvisionedConcurrencyUtilization per version."""

    def collect(self) -> Iterator[Metric]:
        labels = ["function", "version"]
        executions = GaugeMetricFamily(
            "faas_provisioned_concurrent_executions",
            "Provisioned environments busy with an invocation", labels=labels,
        )  # fmt: skip
        utilization = GaugeMetricFamily(
            "faas_provisioned_concurrency_utilization",
            "Busy provisioned environments over those allocated", labels=labels,
        )  # fmt: skip
        allocated = GaugeMetricFamily(
            "faas_provisioned_concurrency_allocated",
            "Provisioned environments initialized and kept warm", labels=labels,
        )  # fmt: skip
        for name, version, status in self._pool.provisioned_pools():
            executions.add_metric([name, version], status.busy)
            allocated.add_metric([name, version], status.allocated)
            share = status.busy / status.allocated if status.allocated else 0.0
            utilization.add_metric([name, version], share)
        yield executions
        yield utilization
        yield allocated


class ConcurrentExecutionsCollector(_PoolCollector):
    """faas_concurrent_executions per function: its executions running now."""

    def collect(self) -> Iterator[Metric]:
        executions = GaugeMetricFamily(
            "faas_concurrent_executions",
            "Executions running (an environment busy with or starting for an invocation)",
            labels=["function"],
        )
        for name, running in self._pool.limits.in_flight_by_function():
            executions.add_metric([name], running)
        yield executions
