"""Scenario name -> the coroutine that runs it, in the order ``smoke`` runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import MappingProxyType

from bench.context import RunContext
from bench.scenarios import (
    async_events,
    burst,
    cold,
    cpu_share,
    keepalive,
    memory,
    payload,
    provisioned,
    startup,
    warm,
)

ScenarioRunner = Callable[[RunContext], Awaitable[None]]

SCENARIOS: MappingProxyType[str, ScenarioRunner] = MappingProxyType(
    {
        "warm": warm.run,
        "payload": payload.run,
        "cold": cold.run,
        "burst": burst.run,
        "memory": memory.run,
        "async": async_events.run,
        "cpu-share": cpu_share.run,
        "keepalive": keepalive.run,
        "provisioned": provisioned.run,
        "startup": startup.run,
    }
)
