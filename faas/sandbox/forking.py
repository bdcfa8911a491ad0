"""Where native Python environments come from when they are not exec'd: the zygote, its spare
environments, and SnapStart templates.

Design notes: the Launcher owns one ``Forking``. It starts the zygote (or, if this node
cannot fork, leaves every environment to exec), keeps spare environments (a cgroup with a
zygote child already parked in it, spares.py) and the SnapStart templates of function
versions (template.py), and tells the Launcher, for each environment, which of them may
fork it: a template of its version first, else the zygote, else none (exec). A fork is
refused for an environment whose start-up-only variables differ from the zygote's, and
for one whose layers bring native libraries (lib/): the dynamic loader of a fork read
LD_LIBRARY_PATH, and noted which of its folders exist, when the zygote started.

The zygote starts in the background (its imports take about 100 ms, which the node's
start-up does not wait for); an environment asked for meanwhile waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from faas.models import FunctionConfig
from faas.sandbox.cgroups import CgroupManager
from faas.sandbox.environment_cgroup import EnvironmentCgroup
from faas.sandbox.namespaces import Isolation, IsolationMode
from faas.sandbox.runtimes import NATIVE_PYTHON_RUNTIMES
from faas.sandbox.spares import SparePool
from faas.sandbox.template import Template, TemplateState, TemplateUnavailable
from faas.sandbox.zygote import Zygote, ZygoteState, fork_unavailable_reason
from faas.sandbox.zygote_requests import ForkRequest, ParkedChild

log = logging.getLogger(__name__)

VersionKey = tuple[str, str, str]  # function name, version, revision id


def version_key(config: FunctionConfig) -> VersionKey:
    return (config.name, config.version, config.revision_id)


class Forking:
    """The zygote, the spare environments and the SnapStart templates of one node.

    Args:
        zygote: the native runtime's zygote, not started yet; None to exec everything.
        spare_count: spare environments to keep (0: none; every fork enters its cgroup
            on the spot, which costs an RCU grace period on an idle node).
    """

    __slots__ = ("_cgroups", "_isolation", "_parked", "_spare_count", "_spares", "_starting",
                 "_templates", "_zygote", "is_running")  # fmt: skip

    def __init__(
        self,
        zygote: Zygote | None,
        cgroups: CgroupManager,
        isolation: Isolation,
        spare_count: int,
    ) -> None:
        self._zygote = zygote
        self._cgroups = cgroups
        self._isolation = isolation
        self._spare_count = spare_count
        self._spares: SparePool | None = None
        # Environments whose cgroup came from a spare: the child parked in it, until launch.
        self._parked: dict[str, ParkedChild] = {}
        self._templates: dict[VersionKey, Template] = {}
        self._starting: asyncio.Task[None] | None = None
        self.is_running = False

    async def start(self) -> None:
        """Begin starting the zygote and the spares in the background; if this node cannot
        fork, log why (and exec)."""
        if self._zygote is None:
            return
        reason = fork_unavailable_reason()
        if reason is not None:
            self._give_up_forking(reason)
            return
        self.is_running = True
        self._starting = asyncio.create_task(self._start_zygote(self._zygote), name="zygote")

    async def _start_zygote(self, zygote: Zygote) -> None:
        try:
            await zygote.start()
        except Exception as exc:  # task boundary: whatever went wrong, exec instead
            self._give_up_forking(str(exc) or type(exc).__name__)
            return
        if self._spare_count > 0 and self.is_running:
            await self._isolation.ready()
            is_unshared = self._isolation.mode is IsolationMode.NAMESPACE
            self._spares = SparePool(
                zygote, self._cgroups, self._spare_count, is_unshared=is_unshared
            )
            self._spares.start()

    def _give_up_forking(self, reason: str) -> None:
        log.warning("python environments start by exec, not fork: %s", reason)
        self._zygote = None
        self.is_running = False

    async def _zygote_started(self) -> None:
        """Return once the zygote's start has ended (ready, or given up on)."""
        if self._starting is not None and not self._starting.done():
            await asyncio.shield(self._starting)

    async def stop(self) -> None:
        """Stop the templates, the spares and the zygote (environments they forked should
        be stopped first: they end with them)."""
        self.is_running = False
        await self._zygote_started()  # bounded by the zygote's own start timeout
        templates, self._templates = self._templates, {}
        for template in templates.values():
            await template.stop()
        if self._spares is not None:
            await self._spares.stop()
        for parked in self._parked.values():
            self.discard(parked)
        self._parked.clear()
        if self._zygote is not None:
            await self._zygote.stop()

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.pid if self._zygote is not None else None

    @property
    def spare_environments(self) -> list[tuple[int, str]]:
        """(pid, cgroup name) of each spare environment."""
        if self._spares is None:
            return []
        return [(spare.parked.pid, spare.cgroup.env_id) for spare in self._spares.spares]

    @property
    def has_spares_ready(self) -> bool:
        return self._spares is not None and self._spares.is_ready

    async def create_cgroup(self, config: FunctionConfig, env_id: str) -> EnvironmentCgroup:
        """A new environment's cgroup (limits written, CPU lifted for Init): a spare one,
        with the child that will be its runtime parked inside, if there is one.

        Raises:
            PlatformError: the kernel refused to create or configure the cgroup.
        """
        limits = self._cgroups.limits_for(config.memory_mb)
        for dead in [e for e, parked in self._parked.items() if not parked.is_waiting]:
            del self._parked[dead]  # its environment never launched (it failed first)
        spare = None
        is_native = config.runtime in NATIVE_PYTHON_RUNTIMES
        if self._spares is not None and is_native and self.ready_template(config) is None:
            spare = self._spares.take()
        if spare is None:
            cgroup = await self._cgroups.create(env_id, limits)
            await cgroup.set_init_boost(True)
            return cgroup
        try:
            cgroup = await self._cgroups.assign(spare.cgroup, env_id, limits, is_cpu_boosted=True)
        except BaseException:
            self.discard(spare.parked)
            await spare.cgroup.remove()
            raise
        self._parked[env_id] = spare.parked
        return cgroup

    def take_parked(self, env_id: str) -> ParkedChild | None:
        """The child parked in ``env_id``'s cgroup, if its cgroup was a spare."""
        return self._parked.pop(env_id, None)

    def discard(self, parked: ParkedChild) -> None:
        """Kill a parked child that will not be used (not to linger in its cgroup)."""
        if self._zygote is not None:
            self._zygote.discard(parked)

    async def server_for(
        self,
        config: FunctionConfig,
        env: Mapping[str, str],
        opt_path: str | None,
        runtime_api: str | None = None,
    ) -> Zygote | Template | None:
        """What may fork this environment: its version's template (frames only), else the
        zygote; None means exec it."""
        zygote = await self._zygote_for(config, env, opt_path)
        if zygote is None:
            return None
        template = self.ready_template(config) if runtime_api is None else None
        return template if template is not None else zygote

    async def _zygote_for(
        self, config: FunctionConfig, env: Mapping[str, str], opt_path: str | None
    ) -> Zygote | None:
        await self._zygote_started()
        zygote = self._zygote
        if zygote is None or not self.is_running or zygote.state is ZygoteState.STOPPED:
            return None
        if config.runtime not in NATIVE_PYTHON_RUNTIMES or not zygote.can_fork(env):
            return None
        if opt_path is not None and await asyncio.to_thread(
            os.path.isdir, os.path.join(opt_path, "lib")
        ):
            return None
        return zygote

    def ready_template(self, config: FunctionConfig) -> Template | None:
        template = self._templates.get(version_key(config))
        return template if template is not None and template.state is TemplateState.READY else None

    def template_of(self, config: FunctionConfig) -> Template | None:
        return self._templates.get(version_key(config))

    async def start_template(
        self,
        template: Template,
        request: ForkRequest,
        opt_path: str | None,
        init_timeout_s: float,
    ) -> None:
        """Start ``template`` from ``request`` (its environment as the Launcher built it);
        then it is the one ``server_for`` gives for its version (replacing any other).

        Raises:
            TemplateUnavailable: this environment cannot be forked here.
            InitFailed: Init or a before-snapshot hook failed, or ran out of time.
        """
        zygote = await self._zygote_for(template.config, request.env, opt_path)
        if zygote is None:
            raise TemplateUnavailable("this version's environments cannot be forked here")
        try:
            await template.start(zygote, request, init_timeout_s)
        except BaseException:
            await template.stop()
            raise
        await self.stop_template(template.config)
        self._templates[version_key(template.config)] = template

    async def stop_template(self, config: FunctionConfig) -> None:
        template = self._templates.pop(version_key(config), None)
        if template is not None:
            await template.stop()
