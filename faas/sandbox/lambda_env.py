"""The process environment of an execution environment: Lambda's variables and the function's.

Design notes: an environment gets exactly the variables Lambda sets (plus the function's
own), never the server's environment. Layers show at /opt when the environment has its
own mount namespace, else at their merged directory. The native Python runtime starts
with -S, so the host's site-packages reach it through PYTHONPATH.
"""

from __future__ import annotations

import importlib.util
import os
import site
import sys
from pathlib import Path

from faas.models import FunctionConfig
from faas.sandbox.namespaces import Isolation, IsolationMode
from faas.sandbox.runtimes import NATIVE_PYTHON_RUNTIMES, NODEJS_RUNTIMES, PROVIDED_RUNTIMES

# AWS_LAMBDA_INITIALIZATION_TYPE of an environment started for an invoke, and of one forked
# from a SnapStart template (and of the template itself).
ON_DEMAND = "on-demand"
SNAP_START = "snap-start"

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


def base_environment(opt: str) -> dict[str, str]:
    """The variables every environment starts from (the zygote too), layers seen at ``opt``."""
    return {
        "PATH": f"/usr/local/bin:/usr/bin/:/bin:{opt}/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LD_LIBRARY_PATH": f"/lib64:/usr/lib64:{opt}/lib",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        # Code directories are precompiled and shared: never write bytecode into them.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def find_runtime_dir() -> str:
    """The directory holding the native Python runtime package (faas_python_runtime)."""
    spec = importlib.util.find_spec("faas_python_runtime")
    if spec is None or spec.origin is None:
        raise RuntimeError("the native Python runtime (faas_python_runtime) is not installed")
    return str(Path(spec.origin).parent.parent)


def native_python_path(runtime_dir: str) -> str:
    """PYTHONPATH of the native runtime: its package, then the host's site-packages.

    The runtime starts with -S (no site processing: ~40 ms less per cold start), so the
    host's site-packages (msgpack, and boto3 as on Lambda) go on PYTHONPATH instead.
    """
    site_dirs = [path for path in site.getsitepackages() if os.path.isdir(path)]
    return os.pathsep.join([runtime_dir, *site_dirs])


class LambdaEnvironment:
    """Builds the variables of environments and extensions on this node."""

    __slots__ = ("_isolation", "_max_response_bytes", "_python_path", "_region", "_runtime_dir")

    def __init__(
        self,
        region: str,
        isolation: Isolation,
        runtime_dir: str,
        python_path: str,
        max_response_bytes: int,
    ) -> None:
        self._region = region
        self._isolation = isolation
        self._runtime_dir = runtime_dir
        self._python_path = python_path
        self._max_response_bytes = max_response_bytes

    def visible_opt(self, opt_path: str | None) -> str:
        """Where an environment sees its layers: /opt in its own namespace, else the tree."""
        if opt_path is None or self._isolation.mode is IsolationMode.NAMESPACE:
            return "/opt"
        return opt_path

    def variables(
        self,
        config: FunctionConfig,
        stream_name: str,
        opt_path: str | None = None,
        initialization_type: str = ON_DEMAND,
    ) -> dict[str, str]:
        """The process environment of one execution environment.

        Args:
            initialization_type: AWS_LAMBDA_INITIALIZATION_TYPE: ``on-demand``,
                ``provisioned-concurrency`` or ``snap-start``.
        """
        opt = self.visible_opt(opt_path)
        env = base_environment(opt)
        env.update(config.environment)
        layer_paths = _layer_python_paths(config, opt) if opt_path else []
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
            env["_FAAS_MAX_RESPONSE_BYTES"] = str(self._max_response_bytes)
        return env

    def for_extension(
        self, config: FunctionConfig, runtime_api: str, opt_path: str | None = None
    ) -> dict[str, str]:
        """What an extension sees: no handler, no task root, no underscore variables."""
        env = self.variables(config, "", opt_path)
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
        for name in [name for name in env if name.startswith("_")]:
            del env[name]
        env.pop("AWS_LAMBDA_LOG_STREAM_NAME", None)
        return env


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
