"""Helpers several scenarios share: starting the targets, creating a function on each of them."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterable, Mapping

from bench.context import RunContext
from bench.services import Baseline, FaasNode, Server, Target, create_function


async def start_targets(
    ctx: RunContext,
    baselines: Iterable[Baseline] = tuple(Baseline),
    *,
    node_settings: Mapping[str, str] | None = None,
    cores: tuple[int, ...] | None = None,
) -> tuple[FaasNode, list[Server]]:
    """The faas node and (unless ``--no-baselines``) the requested baselines, started together."""
    kinds = list(baselines) if ctx.options.with_baselines else []
    with ctx.display.phase("starting servers", float(1 + len(kinds)), is_timed=False):
        node, *servers = await asyncio.gather(
            ctx.services.node(node_settings, cores),
            *(ctx.services.baseline(kind, cores) for kind in kinds),
        )
    assert isinstance(node, FaasNode)
    return node, list(servers)


async def create_everywhere(
    ctx: RunContext, targets: Iterable[Target], name: str, handler: str, memory_mb: int
) -> None:
    """Create function ``name`` on every target (baselines ignore ``memory_mb``)."""
    for target in targets:
        await create_function(ctx.session, target, name, handler, memory_mb=memory_mb)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else 0.0
