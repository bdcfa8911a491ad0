"""Build the argv, environment and working directory of a runtime and start it.

Design notes: an environment gets exactly the variables Lambda sets (plus the
function's own), never the server's environment. The runtime runs in a new
session, so its whole process group can be signalled at once, and gets its end
of a socketpair as an inherited descriptor. The native Python runtime runs on
the host interpreter (the one running faas) for every python3.x Runtime value.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import site
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from faas.errors import InitFailed
from faas.models import FunctionConfig
from faas.sandbox.cgroups import CgroupManager
from faas.sandbox.environment_cgroup import EnvironmentCgroup
from faas.sandbox.namespaces import Isolation, IsolationMode
from faas.sandbox.runtimes import (
    NATIVE_PYTHON_RUNTIMES,
    NODEJS_RUNTIMES,
    PROVIDED_RUNTIMES,
    node_executable,
)

INVALID_ENTRYPOINT = "Runtime.InvalidEntrypoint"

# Variables a user may not set in Environment.Variables (lambda-compat.md D).
RESERVED_ENV_VARS = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


@dataclass(frozen=True, slots=True)
class LaunchedRuntime:
    """A started runtime process and the node's end of its control socket."""

    process: asyncio.subprocess.Process
    control: socket.socket | None  # the native runtime's frame socket; None over the Runtime API
    log_stream_name: str


def log_stream_name(version: str) -> str:
    """``YYYY/MM/DD/[<version>]<32 hex>``, as Lambda names an environment's stream."""
    return time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{version}]{secrets.token_hex(16)}"


class Launcher:
    """Starts native Python runtime processes for function configurations."""

    __slots__ = (
        "_isolation",
        "_node",
        "_nodejs_bootstrap",
        "_python_over_runtime_api",
        "_python_path",
        "_region",
        "_runtime_dir",
        "cgroups",
        "max_response_bytes",
    )

    def __init__(
        self,
        region: str,
        max_response_bytes: int,
        isolation: Isolation,
        cgroups: CgroupManager,
        python_over_runtime_api: bool = False,
    ) -> None:
        self._region = region
        self.cgroups = cgroups
        self._isolation = isolation
        self._python_over_runtime_api = python_over_runtime_api
        self._node = node_executable()
        self._nodejs_bootstrap = self._find_nodejs_bootstrap()
        self.max_response_bytes = max_response_bytes
        self._runtime_dir = self._find_runtime_dir()
        # The runtime starts with -S (no site processing: ~40 ms less per cold start), so
        # the host's site-packages (msgpack, and boto3 as on Lambda) go on PYTHONPATH instead.
        site_dirs = [path for path in site.getsitepackages() if os.path.isdir(path)]
        self._python_path = os.pathsep.join([self._runtime_dir, *site_dirs])

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

    @staticmethod
    def _find_runtime_dir() -> str:
        import importlib.util

        spec = importlib.util.find_spec("faas_python_runtime")
        if spec is None or spec.origin is None:
            raise RuntimeError("the native Python runtime (faas_python_runtime) is not installed")
        return str(Path(spec.origin).parent.parent)

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
        env = self.environment_variables(config, "", opt_path)
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
        for name in [name for name in env if name.startswith("_")]:
            del env[name]
        env.pop("AWS_LAMBDA_LOG_STREAM_NAME", None)
        return env

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
        await cgroup.attach(process.pid)
        return process

    def uses_runtime_api(self, config: FunctionConfig) -> bool:
        """Whether ``config`` runs over the HTTP Runtime API rather than native frames."""
        return config.runtime not in NATIVE_PYTHON_RUNTIMES or self._python_over_runtime_api

    def visible_opt(self, opt_path: str | None) -> str:
        """Where an environment sees its layers: /opt in its own namespace, else the tree."""
        if opt_path is None or self._isolation.mode is IsolationMode.NAMESPACE:
            return "/opt"
        return opt_path

    def environment_variables(
        self,
        config: FunctionConfig,
        stream_name: str,
        opt_path: str | None = None,
        initialization_type: str = "on-demand",
    ) -> dict[str, str]:
        """The process environment of one execution environment."""
        opt = self.visible_opt(opt_path)
        env = {
            "PATH": f"/usr/local/bin:/usr/bin/:/bin:{opt}/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LD_LIBRARY_PATH": f"/lib64:/usr/lib64:{opt}/lib",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            # Code directories are precompiled and shared: never write bytecode into them.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.update(config.environment)
        layer_paths = self._layer_python_paths(config, opt) if opt_path else []
        user_path = config.environment.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(
            [*([user_path] if user_path else []), *layer_paths, self._python_path]
        )
        if opt_path and config.runtime in NODEJS_RUNTIMES:
            major = config.runtime.removeprefix("nodejs").split(".")[0]
            env["NODE_PATH"] = f"{opt}/nodejs/node{major}/node_modules:{opt}/nodejs/node_modules"
        env.update(
            {
                "_HANDLER": config.handler,
                "AWS_REGION": self._region,
                "AWS_DEFAULT_REGION": self._region,
                "AWS_LAMBDA_FUNCTION_NAME": config.name,
                "AWS_LAMBDA_FUNCTION_VERSION": config.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
                "AWS_LAMBDA_INITIALIZATION_TYPE": initialization_type,
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": stream_name,
                "LAMBDA_RUNTIME_DIR": self._runtime_dir,
            }
        )
        if config.runtime not in PROVIDED_RUNTIMES:
            env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{config.runtime}"
        if config.runtime in NATIVE_PYTHON_RUNTIMES:
            # Private settings of our own runtime; it removes them before user code runs.
            env["_FAAS_MAX_RESPONSE_BYTES"] = str(self.max_response_bytes)
        return env

    @staticmethod
    def _layer_python_paths(config: FunctionConfig, opt: str) -> list[str]:
        """Lambda's layer paths for Python: the function runtime's and the host's version."""
        versions = (
            [config.runtime.removeprefix("python")] if config.runtime.startswith("python") else []
        )
        host = f"{sys.version_info.major}.{sys.version_info.minor}"
        versions += [host] if host not in versions else []
        return [
            *(f"{opt}/python/lib/python{version}/site-packages" for version in versions),
            f"{opt}/python",
        ]

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
        initialization_type: str = "on-demand",
    ) -> LaunchedRuntime:
        """Start a runtime for ``config`` with its code in ``code_directory``.

        With ``runtime_api`` (``host:port``) the runtime reaches the node over the Runtime
        API; without it, the native Python runtime gets a frame socket.

        Raises:
            InitFailed: the runtime cannot be started (no bootstrap, no Node.js).
        """
        stream_name = log_stream_name(config.version)
        env = self.environment_variables(config, stream_name, opt_path, initialization_type)
        env["LAMBDA_TASK_ROOT"] = code_directory
        isolated = await self._isolation.prepare(
            env_id, config.ephemeral_storage_mb, self.family(config), opt_path
        )
        env.update(isolated.env)
        argv = cgroup.wrap([*isolated.argv_prefix, *self._argv(config, code_directory, opt_path)])
        parent_end: socket.socket | None = None
        child_end: socket.socket | None = None
        if runtime_api is not None:
            env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
            if config.runtime in NATIVE_PYTHON_RUNTIMES:
                env["_FAAS_TRANSPORT"] = "runtime-api"
        else:
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            env["_FAAS_CONTROL_FD"] = str(child_end.fileno())
        if config.runtime in NATIVE_PYTHON_RUNTIMES and cgroup.peak_memory_file:
            env["_FAAS_PEAK_MEMORY_FILE"] = cgroup.peak_memory_file
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
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
        if parent_end is not None:
            parent_end.setblocking(False)
        try:
            await cgroup.attach(process.pid)
        except BaseException:
            signal_process_group(process.pid, signal.SIGKILL)
            if parent_end is not None:
                parent_end.close()
            raise
        return LaunchedRuntime(process, parent_end, stream_name)


def signal_process_group(pid: int, signum: int) -> None:
    """Signal every process of an environment's group (its own session), if still there."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
