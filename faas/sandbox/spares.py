"""Spare environments: a cgroup with a zygote child already parked inside, ready to be handed out.

Design notes: moving a process into a cgroup makes the kernel wait for an RCU grace period
whenever no other move happened just before (percpu rwsem, cgroup_threadgroup_rwsem): 5 to
20 ms on an idle node, more than all the rest of a forked cold start. A spare pays that
ahead of time (all missing spares at once, so that they wait out one grace period
together). ``take`` hands one out (the cgroup is given the environment's limits and
the parked child becomes its runtime); a background filler keeps ``target`` of them, a
moment after each take so that it does not compete with the start it just served. Spares
whose child died (with a lost zygote, say) are removed rather than handed out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from dataclasses import dataclass

from faas.errors import PlatformError
from faas.sandbox.cgroups import CgroupManager
from faas.sandbox.environment_cgroup import EnvironmentCgroup
from faas.sandbox.zygote import Zygote
from faas.sandbox.zygote_requests import ParkedChild

log = logging.getLogger(__name__)

REFILL_DELAY_S = 0.05  # after a take, let the environment just handed out start first
RETRY_DELAY_S = 5.0  # after a failure to make a spare
STOP_TIMEOUT_S = 10.0  # for the spare being made when the pool stops


@dataclass(frozen=True, slots=True)
class Spare:
    """A cgroup nobody uses yet, and the zygote child parked in it."""

    cgroup: EnvironmentCgroup
    parked: ParkedChild


class SparePoolState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # keeping ``target`` spares
    STOPPED = "stopped"  # every spare removed


class SparePool:
    """Keeps ``target`` spares for native Python environments.

    Args:
        is_unshared: parked children enter their own mount namespace already (the node
            isolates environments in namespaces).
    """

    __slots__ = ("_cgroups", "_dead", "_filler", "_is_unshared", "_spares", "_stopping",
                 "_target", "_wanted", "_zygote", "state")  # fmt: skip

    def __init__(
        self, zygote: Zygote, cgroups: CgroupManager, target: int, *, is_unshared: bool
    ) -> None:
        self._zygote = zygote
        self._cgroups = cgroups
        self._target = target
        self._is_unshared = is_unshared
        self._spares: collections.deque[Spare] = collections.deque()
        self._dead: list[Spare] = []  # their child died while parked; the filler removes them
        self._wanted = asyncio.Event()
        self._stopping = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self.state = SparePoolState.NEW

    def __len__(self) -> int:
        return len(self._spares)

    def start(self) -> None:
        """Start filling (in the background)."""
        if self.state is not SparePoolState.NEW:
            raise RuntimeError(f"spare pool cannot start from {self.state.value}")
        self.state = SparePoolState.RUNNING
        self._filler = asyncio.create_task(self._fill(), name="zygote-spares")
        self._wanted.set()

    async def stop(self) -> None:
        """Stop filling (the spare being made is finished first: a cgroup half made when
        cancelled would be left behind), kill the parked children, remove their cgroups."""
        self.state = SparePoolState.STOPPED
        self._stopping.set()
        if self._filler is not None:
            self._wanted.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._filler), STOP_TIMEOUT_S)
            except TimeoutError:
                self._filler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._filler
            self._filler = None
        while self._spares:
            self._dead.append(self._spares.popleft())
        while self._dead:
            await self._remove(self._dead.pop())

    def take(self) -> Spare | None:
        """A spare whose child still waits, if there is one; the pool refills later."""
        spare = None
        while self._spares:
            candidate = self._spares.pop()
            if candidate.parked.is_waiting:
                spare = candidate
                break
            self._dead.append(candidate)
        if self.state is SparePoolState.RUNNING:
            self._wanted.set()
        return spare

    @property
    def spares(self) -> list[Spare]:
        """The spares there are now (their children parked, or dead and about to go)."""
        return [*self._spares, *self._dead]

    @property
    def is_ready(self) -> bool:
        """Whether every spare wanted is there (for tests and the bench: a quiet node)."""
        return len(self._spares) >= self._target and not self._wanted.is_set()

    async def _fill(self) -> None:
        while self.state is SparePoolState.RUNNING:
            await self._wanted.wait()
            await asyncio.sleep(REFILL_DELAY_S)
            self._wanted.clear()
            try:
                await self._top_up()
            except (PlatformError, OSError) as exc:
                if self.state is not SparePoolState.RUNNING:
                    return
                log.warning("cannot prepare spare environments: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), RETRY_DELAY_S)
                self._wanted.set()

    async def _top_up(self) -> None:
        for spare in [spare for spare in self._spares if not spare.parked.is_waiting]:
            self._spares.remove(spare)
            self._dead.append(spare)
        while self._dead:
            await self._remove(self._dead.pop())
        missing = self._target - len(self._spares)
        if missing <= 0 or self.state is not SparePoolState.RUNNING:
            return
        # All at once: the children wait out one grace period together, not one each.
        made = await asyncio.gather(*(self._make() for _ in range(missing)), return_exceptions=True)
        failures = [result for result in made if isinstance(result, BaseException)]
        self._spares.extend(result for result in made if isinstance(result, Spare))
        if failures:
            raise failures[0]

    async def _make(self) -> Spare:
        cgroup = await self._cgroups.create_spare()
        try:
            parked = await self._zygote.park(cgroup.procs_files, self._is_unshared)
        except BaseException:
            await cgroup.remove()
            raise
        return Spare(cgroup, parked)

    async def _remove(self, spare: Spare) -> None:
        self._zygote.discard(spare.parked)
        try:
            await spare.cgroup.remove()
        except PlatformError as exc:
            log.warning("cannot remove spare cgroup %s: %s", spare.cgroup.env_id, exc)
