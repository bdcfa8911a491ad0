"""Build the argv, environment and working directory of a runtime and start it.

Design notes: an environment gets exactly the variables Lambda sets (plus the
function's own, lambda_env.py), never the server's environment. The runtime runs in
a new session, so its whole process group can be signalled at once, and gets its end
of a socketpair as an inherited descriptor. The native Python runtime runs on
the host interpreter (the one running faas) for every python3.x Runtime value.

Native Python environments are forked from the runtime's zygote (zygote.py) while it
runs: the same environment, cwd, cgroup and isolation, applied by the child itself
instead of by an exec'd wrapper chain, in a few milliseconds instead of ~150. Anything
the zygote cannot do (it is disabled, lost, or the environment sets a variable only a
fresh interpreter honours) is started by exec, exactly as before.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from faas.errors import InitFailed
from faas.models import FunctionConfig
from faas.sandbox.cgroups import CgroupManager
from faas.sandbox.environment_cgroup import EnvironmentCgroup
from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.forking import Forking
from faas.sandbox.lambda_env import (
    ON_DEMAND,
    RESERVED_ENV_VARS,
    SNAP_START,
    LambdaEnvironment,
    find_runtime_dir,
    native_python_path,
)
from faas.sandbox.namespaces import Isolation
from faas.sandbox.runtimes import (
    NATIVE_PYTHON_RUNTIMES,
    NODEJS_RUNTIMES,
    node_executable,
)
from faas.sandbox.scheduling import enter_batch_class
from faas.sandbox.template import Template, TemplateUnavailable
from faas.sandbox.zygote import Zygote, ZygoteUnavailable
from faas.sandbox.zygote_requests import ForkRequest, ParkedChild

__all__ = [
    "ON_DEMAND",
    "RESERVED_ENV_VARS",
    "LaunchedRuntime",
    "Launcher",
    "LauncherState",
    "RuntimeProcess",
    "log_stream_name",
    "signal_process_group",
]

log = logging.getLogger(__name__)

INVALID_ENTRYPOINT = "Runtime.InvalidEntrypoint"
DEFAULT_SPARE_ENVIRONMENTS = 4

# A runtime process: exec'd (the node's child) or forked by the zygote (the zygote's child).
RuntimeProcess = asyncio.subprocess.Process | ForkedProcess


class LauncherState(enum.Enum):
    NEW = "new"  # constructed: launches exec every runtime
    RUNNING = "running"  # started: native Python runtimes fork from the zygote when it can
    STOPPED = "stopped"  # the zygote is stopped; launches exec again


@dataclass(frozen=True, slots=True)
class LaunchedRuntime:
    """A started runtime process and the node's end of its control socket."""

    process: RuntimeProcess
    control: socket.socket | None  # the native runtime's frame socket; None over the Runtime API
    log_stream_name: str


def log_stream_name(version: str) -> str:
    """``YYYY/MM/DD/[<version>]<32 hex>``, as Lambda names an environment's stream."""
    return time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{version}]{secrets.token_hex(16)}"


class Launcher:
    """Starts runtime processes for function configurations: fork or exec.

    ``start`` starts the native Python runtime's zygote (unless ``use_zygote`` is False);
    until then, and after ``stop``, every runtime is exec'd.
    """

    __slots__ = (
        "_forking",
        "_isolation",
        "_node",
        "_nodejs_bootstrap",
        "_python_over_runtime_api",
        "_python_path",
        "_runtime_dir",
        "_variables",
        "cgroups",
        "max_response_bytes",
        "state",
    )

    def __init__(
        self,
        region: str,
        max_response_bytes: int,
        isolation: Isolation,
        cgroups: CgroupManager,
        python_over_runtime_api: bool = False,
        use_zygote: bool = True,
        spare_environments: int = DEFAULT_SPARE_ENVIRONMENTS,
    ) -> None:
        self.cgroups = cgroups
        self._isolation = isolation
        self._python_over_runtime_api = python_over_runtime_api
        self._node = node_executable()
        self._nodejs_bootstrap = self._find_nodejs_bootstrap()
        self.max_response_bytes = max_response_bytes
        self._runtime_dir = find_runtime_dir()
        self._python_path = native_python_path(self._runtime_dir)
        self._variables = LambdaEnvironment(
            region, isolation, self._runtime_dir, self._python_path, max_response_bytes
        )
        self.state = LauncherState.NEW
        zygote = Zygote.for_native_runtime(self._python_path) if use_zygote else None
        self._forking = Forking(zygote, cgroups, isolation, spare_environments)

    async def start(self) -> None:
        """Start the zygote and the spares; if this node cannot fork, exec every runtime."""
        if self.state is not LauncherState.NEW:
            raise RuntimeError(f"launcher cannot start from {self.state.value}")
        self.state = LauncherState.RUNNING
        await self._forking.start()

    async def stop(self) -> None:
        """Stop the SnapStart templates, the spare environments and the zygote (the
        environments they forked should be stopped first: they end with them)."""
        self.state = LauncherState.STOPPED
        await self._forking.stop()

    @property
    def zygote_pid(self) -> int | None:
        """The zygote's pid while it runs."""
        return self._forking.zygote_pid

    @property
    def spare_environments(self) -> list[tuple[int, str]]:
        """(pid, cgroup name) of each spare: a zygote child parked in a ``spare-<hex>``
        cgroup, which no environment owns yet (for books that account for every process)."""
        return self._forking.spare_environments

    @property
    def has_spares_ready(self) -> bool:
        """Whether every spare environment wanted is prepared (false without spares)."""
        return self._forking.has_spares_ready

    async def create_cgroup(self, config: FunctionConfig, env_id: str) -> EnvironmentCgroup:
        """The cgroup of a new environment, limits written and CPU lifted for Init.

        A native Python environment gets a spare one when there is one: the zygote child
        already parked in it becomes its runtime when it is launched.

        Raises:
            PlatformError: the kernel refused to create or configure the cgroup.
        """
        return await self._forking.create_cgroup(config, env_id)

    async def start_template(
        self,
        config: FunctionConfig,
        code_directory: str,
        opt_path: str | None = None,
        *,
        log_output: Callable[[bytes], None] | None = None,
        init_timeout_s: float = 10.0,
    ) -> Template:
        """Start the SnapStart template of ``config``'s version (template.py): an environment
        that runs Init once, then the before-snapshot hooks; from then on ``launch`` forks
        that version's native environments from it (AWS_LAMBDA_INITIALIZATION_TYPE
        snap-start, after-restore hooks, no Init). A template already there is replaced.

        Args:
            log_output: where the template's output goes (Init, hooks): the function's log.

        Raises:
            TemplateUnavailable: this node cannot make one (no zygote, the Runtime API
                transport, environments dropping to another user, a variable only a fresh
                interpreter honours, native libraries in a layer, /tmp under /tmp).
            InitFailed: Init or a before-snapshot hook failed, or ran out of time.
            PlatformError: the kernel refused its cgroup.
        """
        if config.runtime not in NATIVE_PYTHON_RUNTIMES or self._python_over_runtime_api:
            raise TemplateUnavailable("templates are for native Python functions over frames")
        env_id = f"tpl-{secrets.token_hex(8)}"
        await self._isolation.ready()
        spec = self._isolation.describe(
            env_id, config.ephemeral_storage_mb, self.family(config), opt_path
        )
        if spec.user_ids is not None:
            raise TemplateUnavailable("environments drop to another user: no template")
        if str(spec.tmp_directory).startswith("/tmp/"):
            raise TemplateUnavailable("the environments' /tmp directories are under /tmp")
        env = self.environment_variables(
            config, log_stream_name(config.version), opt_path, SNAP_START
        )
        env["LAMBDA_TASK_ROOT"] = code_directory
        cgroup = await self.cgroups.create(env_id, self.cgroups.limits_for(config.memory_mb))
        await cgroup.set_init_boost(True)
        if cgroup.peak_memory_file:
            env["_FAAS_PEAK_MEMORY_FILE"] = cgroup.peak_memory_file
        template = Template(config, env_id, cgroup, self._isolation, log_output or _discard)
        request = ForkRequest({**env, **spec.env}, code_directory, cgroup.procs_files, spec)
        await self._forking.start_template(template, request, opt_path, init_timeout_s)
        return template

    async def stop_template(self, config: FunctionConfig) -> None:
        """Stop the SnapStart template of ``config``'s version, if any (its copies end)."""
        await self._forking.stop_template(config)

    def template_of(self, config: FunctionConfig) -> Template | None:
        """The SnapStart template of ``config``'s version, if one was started."""
        return self._forking.template_of(config)

    @staticmethod
    def _find_nodejs_bootstrap() -> str:
        """runtimes/nodejs/bootstrap.js, installed as the data package faas_nodejs_runtime."""
        import importlib.util

        spec = importlib.util.find_spec("faas_nodejs_runtime")
        locations = list(spec.submodule_search_locations or []) if spec else []
        for location in locations:
            candidate = Path(location) / "bootstrap.js"
            if candidate.is_file():
                return str(candidate)
        return str(Path(__file__).resolve().parents[2] / "runtimes" / "nodejs" / "bootstrap.js")

    @property
    def isolation(self) -> Isolation:
        return self._isolation

    def paths_needed(self, shared: list[str]) -> dict[str, list[str]]:
        """Per runtime family, what its environments' user must reach (plus ``shared``)."""
        return {
            "python": [sys.executable, self._runtime_dir, *self._python_path.split(os.pathsep),
                       *shared],
            "nodejs": [*([self._node] if self._node else []), self._nodejs_bootstrap, *shared],
            "provided": shared,
        }  # fmt: skip

    @staticmethod
    def family(config: FunctionConfig) -> str:
        """The runtime family: python, nodejs or provided."""
        if config.runtime in NATIVE_PYTHON_RUNTIMES:
            return "python"
        return "nodejs" if config.runtime in NODEJS_RUNTIMES else "provided"

    def extension_executables(self, opt_directories: list[str]) -> list[str]:
        """External extensions: executables in each layer's ``extensions/``, sorted by name."""
        found: dict[str, str] = {}
        for directory in opt_directories:
            folder = os.path.join(directory, "extensions")
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    found[name] = path  # a later layer's file of the same name wins
        return [found[name] for name in sorted(found)]

    def extension_environment(
        self, config: FunctionConfig, runtime_api: str, opt_path: str | None = None
    ) -> dict[str, str]:
        """What an extension sees: no handler, no task root, no underscore variables."""
        return self._variables.for_extension(config, runtime_api, opt_path)

    async def launch_extension(
        self,
        path: str,
        config: FunctionConfig,
        runtime_api: str,
        env_id: str,
        cgroup: EnvironmentCgroup,
        opt_path: str | None = None,
    ) -> asyncio.subprocess.Process:
        """Start one external extension in its own session, output to the node."""
        isolated = await self._isolation.prepare(
            env_id, config.ephemeral_storage_mb, self.family(config), opt_path
        )
        env = self.extension_environment(config, runtime_api, opt_path)
        env.update(isolated.env)
        process = await asyncio.create_subprocess_exec(
            *cgroup.wrap([*isolated.argv_prefix, path]),
            cwd=os.path.dirname(path),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        enter_batch_class(process.pid)
        await cgroup.attach(process.pid)
        return process

    def uses_runtime_api(self, config: FunctionConfig) -> bool:
        """Whether ``config`` runs over the HTTP Runtime API rather than native frames."""
        return config.runtime not in NATIVE_PYTHON_RUNTIMES or self._python_over_runtime_api

    def visible_opt(self, opt_path: str | None) -> str:
        """Where an environment sees its layers: /opt in its own namespace, else the tree."""
        return self._variables.visible_opt(opt_path)

    def environment_variables(
        self,
        config: FunctionConfig,
        stream_name: str,
        opt_path: str | None = None,
        initialization_type: str = ON_DEMAND,
    ) -> dict[str, str]:
        """The process environment of one execution environment (lambda_env.py)."""
        return self._variables.variables(config, stream_name, opt_path, initialization_type)

    def _argv(self, config: FunctionConfig, code_directory: str, opt_path: str | None) -> list[str]:
        if config.runtime in NATIVE_PYTHON_RUNTIMES:
            return [sys.executable, "-S", "-m", "faas_python_runtime"]
        if config.runtime in NODEJS_RUNTIMES:
            if self._node is None:
                raise InitFailed(
                    "Runtime.InvalidRuntime",
                    orjson.dumps({"errorType": "Runtime.InvalidRuntime",
                                  "errorMessage": "Node.js is not installed on this node"}),
                )  # fmt: skip
            return [self._node, self._nodejs_bootstrap]
        candidates = [os.path.join(code_directory, "bootstrap")]
        candidates.append(os.path.join(opt_path or "/opt", "bootstrap"))
        for bootstrap in candidates if opt_path else candidates[:1]:
            if os.path.isfile(bootstrap) and os.access(bootstrap, os.X_OK):
                return [bootstrap]
        message = f"Couldn't find valid bootstrap(s): [{' '.join(candidates)}]"
        raise InitFailed(
            INVALID_ENTRYPOINT,
            orjson.dumps({"errorType": INVALID_ENTRYPOINT, "errorMessage": message}),
        )

    async def launch(
        self,
        config: FunctionConfig,
        code_directory: str,
        env_id: str,
        cgroup: EnvironmentCgroup,
        runtime_api: str | None = None,
        opt_path: str | None = None,
        initialization_type: str = ON_DEMAND,
    ) -> LaunchedRuntime:
        """Start a runtime for ``config`` with its code in ``code_directory``.

        With ``runtime_api`` (``host:port``) the runtime reaches the node over the Runtime
        API; without it, the native Python runtime gets a frame socket. A native Python
        runtime is forked from the zygote when it can be, else exec'd like the others.

        Args:
            initialization_type: AWS_LAMBDA_INITIALIZATION_TYPE (``on-demand`` unless the
                pool starts it for provisioned concurrency).

        Raises:
            InitFailed: the runtime cannot be started (no bootstrap, no Node.js).
        """
        await self._isolation.ready()
        stream_name = log_stream_name(config.version)
        env = self.environment_variables(config, stream_name, opt_path, initialization_type)
        env["LAMBDA_TASK_ROOT"] = code_directory
        is_native = config.runtime in NATIVE_PYTHON_RUNTIMES
        if runtime_api is not None:
            env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
            if is_native:
                env["_FAAS_TRANSPORT"] = "runtime-api"
        if is_native and cgroup.peak_memory_file:
            env["_FAAS_PEAK_MEMORY_FILE"] = cgroup.peak_memory_file
        parked = self._forking.take_parked(env_id)
        server = await self._forking.server_for(config, env, opt_path, runtime_api)
        if server is not None and self.state is LauncherState.RUNNING:
            if isinstance(server, Template) and initialization_type == ON_DEMAND:
                env["AWS_LAMBDA_INITIALIZATION_TYPE"] = SNAP_START
            try:
                process, control = await self._fork(
                    server, config, code_directory, env_id, cgroup, env, opt_path,
                    has_control=runtime_api is None, parked=parked,
                )  # fmt: skip
            except ZygoteUnavailable as exc:
                log.warning("environment %s starts by exec: %s", env_id, exc)
                env["AWS_LAMBDA_INITIALIZATION_TYPE"] = initialization_type
            else:
                is_inside = parked is not None and process.pid == parked.pid
                return await self._attached(cgroup, process, control, stream_name, is_inside)
        if parked is not None:
            self._forking.discard(parked)  # not to linger in the cgroup the exec'd runtime gets
        process, control = await self._exec(
            config, code_directory, env_id, cgroup, env, opt_path, has_control=runtime_api is None
        )
        return await self._attached(cgroup, process, control, stream_name)

    async def _fork(
        self,
        server: Zygote | Template,
        config: FunctionConfig,
        code_directory: str,
        env_id: str,
        cgroup: EnvironmentCgroup,
        env: dict[str, str],
        opt_path: str | None,
        *,
        has_control: bool,
        parked: ParkedChild | None,
    ) -> tuple[RuntimeProcess, socket.socket | None]:
        """Fork the runtime from the zygote (or have ``parked`` become it), or a restored
        copy from a SnapStart template; the child applies cgroup and isolation itself, and
        makes its private /tmp.

        Raises:
            ZygoteUnavailable: it cannot be forked (the caller execs instead).
        """
        spec = self._isolation.describe(
            env_id, config.ephemeral_storage_mb, self.family(config), opt_path
        )
        parent_end, child_end = _control_pair() if has_control else (None, None)
        request = ForkRequest(
            env={**env, **spec.env},
            cwd=code_directory,
            cgroup_procs=cgroup.procs_files,
            isolation=spec,
            control=child_end,
        )
        try:
            if isinstance(server, Template):
                process = await server.spawn(request)
            else:
                process = await server.spawn(request, parked)
        except BaseException:
            if parent_end is not None:
                parent_end.close()
            raise
        finally:
            if child_end is not None:
                child_end.close()
        enter_batch_class(process.pid)
        return process, parent_end

    async def _exec(
        self,
        config: FunctionConfig,
        code_directory: str,
        env_id: str,
        cgroup: EnvironmentCgroup,
        env: dict[str, str],
        opt_path: str | None,
        *,
        has_control: bool,
    ) -> tuple[RuntimeProcess, socket.socket | None]:
        """Exec the runtime through the cgroup and isolation wrappers.

        Raises:
            InitFailed: the program cannot be started.
        """
        isolated = await self._isolation.prepare(
            env_id, config.ephemeral_storage_mb, self.family(config), opt_path
        )
        env = {**env, **isolated.env}
        argv = self._argv(config, code_directory, opt_path)
        parent_end, child_end = _control_pair() if has_control else (None, None)
        if child_end is not None:
            env["_FAAS_CONTROL_FD"] = str(child_end.fileno())
        try:
            process = await asyncio.create_subprocess_exec(
                *cgroup.wrap([*isolated.argv_prefix, *argv]),
                cwd=code_directory,
                env=env,
                pass_fds=(child_end.fileno(),) if child_end is not None else (),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            if parent_end is not None:
                parent_end.close()
            message = f"Couldn't start the runtime {argv[-1]}: {exc.strerror or exc}"
            raise InitFailed(
                INVALID_ENTRYPOINT,
                orjson.dumps({"errorType": INVALID_ENTRYPOINT, "errorMessage": message}),
            ) from exc
        finally:
            if child_end is not None:
                child_end.close()
        enter_batch_class(process.pid)
        return process, parent_end

    @staticmethod
    async def _attached(
        cgroup: EnvironmentCgroup,
        process: RuntimeProcess,
        control: socket.socket | None,
        stream_name: str,
        is_inside: bool = False,
    ) -> LaunchedRuntime:
        """Wait until the started process is inside its cgroup (or kill it)."""
        if control is not None:
            control.setblocking(False)
        try:
            await cgroup.attach(process.pid, is_inside=is_inside)
        except BaseException:
            signal_process_group(process.pid, signal.SIGKILL)
            if control is not None:
                control.close()
            raise
        return LaunchedRuntime(process, control, stream_name)


def _discard(output: bytes) -> None:
    """Output nobody asked for."""


def _control_pair() -> tuple[socket.socket, socket.socket]:
    """The node's and the runtime's ends of a native runtime's frame socket."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def signal_process_group(pid: int, signum: int) -> None:
    """Signal every process of an environment's group (its own session), if still there."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
