"""One execution environment: a runtime process, its transport, and its state machine.

    NEW -> STARTING -> IDLE <-> BUSY -> STOPPING -> STOPPED
                  \\______________\\________________-> DEAD (crashed, timed out, init failed)

The node sends one ``invoke`` at a time and waits for ``result``/``error`` from the
transport's inbox: msgpack frames for the native Python runtime, or Runtime API
calls turned into the same frames for every other runtime. Output the runtime
writes goes to the log of whatever the environment is doing. A timeout kills the
whole process group; so does stopping after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from faas.errors import (
    RUNTIME_EXIT_ERROR,
    RUNTIME_OUT_OF_MEMORY,
    SANDBOX_TIMEDOUT,
    InitFailed,
    InvokeTimedOut,
    RuntimeExited,
)
from faas.models import FunctionConfig, InvocationRequest
from faas.observe.logs import InvocationLog
from faas.pool.channel import Frame
from faas.pool.transport import NativeTransport, RuntimeTransport
from faas.runtime_api.extensions import ExtensionHub, ShutdownReason
from faas.runtime_api.server import RuntimeApiServer
from faas.runtime_api.session import RuntimeSession
from faas.sandbox.environment_cgroup import EnvironmentCgroup
from faas.sandbox.launcher import (
    LaunchedRuntime,
    Launcher,
    RuntimeProcess,
    signal_process_group,
)

logger = logging.getLogger(__name__)

_OUTPUT_CHUNK = 64 * 1024

StrayOutput = Callable[[str, bytes], None]
# The merged layer tree of a function (None without layers), built on first use.
OptDirectory = Callable[[FunctionConfig], Awaitable[Path | None]]
_EXIT_STATUS_WAIT_S = 2.0
EXTENSION_SHUTDOWN_S = 2.0


class EnvironmentState(enum.Enum):
    NEW = "new"  # constructed, no process yet
    STARTING = "starting"  # process started, Init running
    IDLE = "idle"  # ready for an invocation
    BUSY = "busy"  # running one invocation
    STOPPING = "stopping"  # Shutdown phase under way
    STOPPED = "stopped"  # shut down cleanly
    DEAD = "dead"  # crashed, timed out or failed Init; never reused


class InvokeOutcome:
    """What the runtime answered for one invocation."""

    __slots__ = ("error_type", "is_error", "max_rss_kb", "payload")

    def __init__(self, payload: bytes, is_error: bool, error_type: str | None, rss_kb: int) -> None:
        self.payload = payload
        self.is_error = is_error
        self.error_type = error_type
        self.max_rss_kb = rss_kb


def _exit_description(returncode: int | None) -> str:
    if returncode is None or returncode == -signal.SIGKILL:
        return "signal: killed"
    if returncode < 0:
        return f"signal: {signal.Signals(-returncode).name.removeprefix('SIG').lower()}"
    return f"exit status {returncode}"


def error_json(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorType": error_type, "errorMessage": message})


class Environment:
    """A runtime process serving invocations of one function configuration, one at a time."""

    __slots__ = (
        "_cgroup",
        "_endpoint",
        "_exit_watch",
        "_extension_processes",
        "_init_boost_end",
        "_launched",
        "_launcher",
        "_log",
        "_output_tasks",
        "_runtime_api",
        "_session",
        "_stray_output",
        "_transport",
        "code_directory",
        "config",
        "env_id",
        "init_duration_ms",
        "init_timings",
        "initialization_type",
        "invocations",
        "is_provisioned",
        "last_used",
        "on_exit",
        "opt_directory",
        "opt_path",
        "shutdown_reason",
        "state",
    )

    def __init__(
        self,
        config: FunctionConfig,
        code_directory: str,
        launcher: Launcher,
        runtime_api: RuntimeApiServer,
        opt_directory: OptDirectory | None = None,
        stray_output: StrayOutput | None = None,
    ) -> None:
        self.config = config
        # Where output goes while no invocation is running (e.g. an extension after the
        # response): the function's log, outside any invocation.
        self._stray_output = stray_output
        # Where the function's layers are merged, presented to it at /opt.
        self.opt_directory = opt_directory
        self.opt_path: str | None = None
        self.env_id = uuid.uuid4().hex[:16]
        self._session: RuntimeSession | None = None
        self._cgroup: EnvironmentCgroup | None = None
        # Restores the CPU share after Init, beside the first invoke rather than before it.
        self._init_boost_end: asyncio.Task[None] | None = None
        self._extension_processes: list[asyncio.subprocess.Process] = []
        self.shutdown_reason = ShutdownReason.SPINDOWN
        self.code_directory = code_directory
        self._launcher = launcher
        self._runtime_api = runtime_api
        self.state = EnvironmentState.NEW
        self._launched: LaunchedRuntime | None = None
        self._transport: RuntimeTransport | None = None
        self._endpoint: str | None = None
        self._exit_watch: asyncio.Task[None] | None = None
        self._log: InvocationLog | None = None
        self._output_tasks: list[asyncio.Task[None]] = []
        self.init_duration_ms = 0.0
        # Where a cold start's time went, in ms: spawn, runtime_init, function_init.
        self.init_timings: dict[str, float] = {}
        self.invocations = 0
        self.last_used = time.monotonic()
        # Provisioned environments run Init before any invoke and never idle out.
        self.is_provisioned = False
        self.initialization_type = "on-demand"
        # Called once when the runtime process exits, whatever the cause.
        self.on_exit: Callable[[Environment], None] | None = None

    @property
    def is_alive(self) -> bool:
        if self._transport is not None and self._transport.inbox.is_closed:
            return False
        return self.state not in (EnvironmentState.DEAD, EnvironmentState.STOPPED)

    @property
    def pid(self) -> int | None:
        return self._launched.process.pid if self._launched else None

    @property
    def log_stream_name(self) -> str:
        return self._launched.log_stream_name if self._launched else ""

    def _write_log(self, data: bytes) -> None:
        if self._log is not None:
            self._log.write(data)
        elif self._stray_output is not None:
            self._stray_output(self.config.name, data)

    @property
    def has_extensions(self) -> bool:
        return bool(self._extension_processes)

    def _function_info(self) -> dict[str, str]:
        return {
            "functionName": self.config.name,
            "functionVersion": self.config.version,
            "handler": self.config.handler,
        }

    async def _open_transport(self, init_timeout_s: float, request_id: str) -> None:
        """Start extensions, then the runtime with the right door: native frames or HTTP."""
        # Limits written, CPU lifted for Init; for Python, maybe a spare with a runtime waiting.
        self._cgroup = await self._launcher.create_cgroup(self.config, self.env_id)
        if self.opt_directory is not None:
            merged = await self.opt_directory(self.config)
            self.opt_path = str(merged) if merged is not None else None
        extensions = self._launcher.extension_executables([self.opt_path] if self.opt_path else [])
        uses_runtime_api = self._launcher.uses_runtime_api(self.config)
        if uses_runtime_api or extensions:
            self._session = RuntimeSession(self._launcher.max_response_bytes, self._function_info())
            self._endpoint = await self._runtime_api.open(self._session)
        if extensions:
            await self._start_extensions(extensions, init_timeout_s, request_id)
        if uses_runtime_api:
            assert self._session is not None
            self._transport = self._session
            self._launched = await self._launcher.launch(
                self.config, self.code_directory, self.env_id, self._cgroup,
                runtime_api=self._endpoint, opt_path=self.opt_path,
                initialization_type=self.initialization_type,
            )  # fmt: skip
        else:
            native = NativeTransport(self._write_log)
            self._transport = native
            self._launched = await self._launcher.launch(
                self.config, self.code_directory, self.env_id, self._cgroup,
                opt_path=self.opt_path, initialization_type=self.initialization_type,
            )  # fmt: skip
            assert self._launched.control is not None
            await native.connect(self._launched.control)
        process = self._launched.process
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                self._output_tasks.append(asyncio.create_task(self._pump_output(stream)))
        self._exit_watch = asyncio.create_task(self._watch_exit(process))

    async def _start_extensions(self, paths: list[str], timeout_s: float, request_id: str) -> None:
        """Extensions init: start each, wait until all registered and wait for events.

        Raises:
            InitFailed: an extension crashed, reported an init error, or never got ready.
        """
        assert self._session is not None and self._endpoint is not None
        hub = self._session.extensions
        for path in paths:
            assert self._cgroup is not None
            process = await self._launcher.launch_extension(
                path, self.config, self._endpoint, self.env_id, self._cgroup, self.opt_path
            )
            self._extension_processes.append(process)
            if process.stdout is not None:
                self._output_tasks.append(asyncio.create_task(self._pump_output(process.stdout)))
            self._output_tasks.append(asyncio.create_task(_notify_on_exit(process, hub)))

        def settled() -> bool:
            crashed = any(p.returncode is not None for p in self._extension_processes)
            ready = len(hub) >= len(paths) and hub.all_waiting()
            return crashed or ready or hub.init_error is not None

        is_settled = await hub.wait_until(settled, timeout_s)
        hub.is_registration_open = False
        if hub.init_error is not None:
            raise InitFailed("Extension.InitError", hub.init_error)
        crashed = [p for p in self._extension_processes if p.returncode is not None]
        if crashed:
            message = (
                f"RequestId: {request_id} Error: exit status {crashed[0].returncode}"
                " Extension.Crash"
            )
            raise InitFailed("Extension.Crash", error_json("Extension.Crash", message))
        if not is_settled:
            message = f"RequestId: {request_id} Error: extensions did not register in time"
            raise InitFailed("Extension.InitTimeout", error_json("Extension.InitTimeout", message))

    async def settle(self) -> bool:
        """After an invocation: wait until every extension asks for its next event.

        Returns False (and the environment is dead) if they don't within the timeout.
        """
        if self._session is None or not self._extension_processes:
            return True
        hub = self._session.extensions
        if await hub.wait_until(hub.all_waiting, float(self.config.timeout_s)):
            return True
        await self._kill(ShutdownReason.TIMEOUT)
        return False

    async def start(self, log: InvocationLog, init_timeout_s: float, request_id: str) -> None:
        """Start the runtime and run Init for the invocation ``request_id``; output goes to ``log``.

        Raises:
            InitFailed: Init reported an error, crashed, or ran past ``init_timeout_s``.
        """
        if self.state is not EnvironmentState.NEW:
            raise RuntimeError(f"environment cannot start from {self.state.value}")
        self.state = EnvironmentState.STARTING
        self._log = log
        started = time.perf_counter()
        try:
            await self._open_transport(init_timeout_s, request_id)
        except InitFailed:
            self.init_duration_ms = (time.perf_counter() - started) * 1000
            await self._kill(ShutdownReason.FAILURE)
            self._log = None
            raise
        spawn_ms = (time.perf_counter() - started) * 1000
        assert self._transport is not None
        frame = await self._transport.inbox.get(init_timeout_s)
        self.init_duration_ms = (time.perf_counter() - started) * 1000
        if frame is not None and frame.get("t") == "ready":
            if self._cgroup is not None:
                self._init_boost_end = asyncio.create_task(self._end_init_boost(self._cgroup))
            function_init_ms = float(frame.get("function_init_ms") or 0.0)
            self.init_timings = {
                "spawn": spawn_ms,
                "runtime_init": max(0.0, self.init_duration_ms - spawn_ms - function_init_ms),
                "function_init": function_init_ms,
            }
            self.state = EnvironmentState.IDLE
            self._log = None
            return
        await self._kill(ShutdownReason.FAILURE)
        self._log = None
        raise await self._init_failure(frame, init_timeout_s, request_id)

    async def _end_init_boost(self, cgroup: EnvironmentCgroup) -> None:
        try:
            await cgroup.set_init_boost(False)
        except OSError as exc:
            logger.warning("environment %s keeps Init's CPU quota: %s", self.env_id, exc)

    async def _init_failure(
        self, frame: Frame | None, init_timeout_s: float, request_id: str
    ) -> InitFailed:
        if frame is None:
            message = (
                f"RequestId: {request_id} Error: Init did not finish within {init_timeout_s:g}s"
            )
            return InitFailed("Runtime.InitTimeout", error_json("Runtime.InitTimeout", message))
        if frame.get("t") == "init_error":
            payload = bytes(frame.get("payload") or b"{}")
            return InitFailed(_error_type_of(payload, "Runtime.Unknown"), payload)
        description = _exit_description(await self._exit_code())
        message = f"RequestId: {request_id} Error: Runtime exited with error: {description}"
        return InitFailed(RUNTIME_EXIT_ERROR, error_json(RUNTIME_EXIT_ERROR, message))

    async def invoke(self, request: InvocationRequest, log: InvocationLog) -> InvokeOutcome:
        """Run one invocation within the function's timeout.

        Raises:
            InvokeTimedOut: the deadline passed; the environment is dead.
            RuntimeExited: the runtime died mid-invoke; the environment is dead.
        """
        if self.state is not EnvironmentState.IDLE or self._transport is None:
            raise RuntimeError(f"environment cannot invoke from {self.state.value}")
        self.state = EnvironmentState.BUSY
        self._log = log
        timeout_s = self.config.timeout_s
        started = time.time()
        deadline_ms = int((started + timeout_s) * 1000)
        if self._session is not None and self._extension_processes:
            self._session.extensions.dispatch(
                {"eventType": "INVOKE", "deadlineMs": deadline_ms, "requestId": request.request_id,
                 "invokedFunctionArn": request.invoked_arn,
                 "tracing": {"type": "X-Amzn-Trace-Id", "value": request.trace_id}}
            )  # fmt: skip
        frame: Frame | None = {}
        try:
            self._transport.send(
                {
                    "t": "invoke",
                    "id": request.request_id,
                    "payload": request.payload,
                    "deadline_ms": deadline_ms,
                    "arn": request.invoked_arn,
                    "trace_id": request.trace_id,
                    "client_context": request.client_context,
                    "cognito_identity": None,
                }
            )
        except ConnectionResetError:
            pass  # died while idle: reported below as an exit
        else:
            frame = await self._transport.inbox.get(timeout_s)
        finally:
            self._log = None
        if frame is None:
            await self._kill(ShutdownReason.TIMEOUT)
            elapsed = time.time() - started
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            message = f"{stamp} {request.request_id} Task timed out after {elapsed:.2f} seconds"
            log.write_line(message)
            raise InvokeTimedOut(SANDBOX_TIMEDOUT, orjson.dumps({"errorMessage": message}))
        kind = frame.get("t")
        if kind in ("result", "error") and frame.get("id") == request.request_id:
            self.state = EnvironmentState.IDLE
            self.invocations += 1
            self.last_used = time.monotonic()
            payload = bytes(frame.get("payload") or b"")
            is_error = kind == "error"
            error_type = (str(frame.get("error_type") or "") or None) if is_error else None
            rss_kb = int(frame.get("max_rss_kb") or 0) or await self.peak_memory_kb()
            return InvokeOutcome(payload, is_error, error_type, rss_kb)
        await self._kill(ShutdownReason.FAILURE)
        description = _exit_description(await self._exit_code())
        message = f"RequestId: {request.request_id} Error: Runtime exited with error: {description}"
        if self._cgroup is not None and await self._cgroup.was_oom_killed():
            raise RuntimeExited(RUNTIME_OUT_OF_MEMORY, error_json(RUNTIME_OUT_OF_MEMORY, message))
        raise RuntimeExited(RUNTIME_EXIT_ERROR, error_json(RUNTIME_EXIT_ERROR, message))

    async def rehearse(self, timeout_s: float) -> None:
        """Run the native runtime's invoke path once without the handler (PROTOCOL.md:
        ``rehearse``), so that the first real invoke is as fast as the later ones.

        Other runtimes have no such path and are left as they are. An environment that
        does not answer in time is killed (and so replaced, if provisioned).
        """
        if not isinstance(self._transport, NativeTransport) or self.state is not (
            EnvironmentState.IDLE
        ):
            return
        request_id = f"rehearsal-{self.env_id}"
        deadline_ms = int((time.time() + timeout_s) * 1000)
        with contextlib.suppress(ConnectionResetError):
            self._transport.send({"t": "rehearse", "id": request_id, "payload": b"{}",
                                  "deadline_ms": deadline_ms, "arn": "", "trace_id": None,
                                  "client_context": None, "cognito_identity": None})  # fmt: skip
        frame = await self._transport.inbox.get(timeout_s)
        if frame is None or frame.get("t") != "result" or frame.get("id") != request_id:
            await self._kill(ShutdownReason.FAILURE)

    async def peak_memory_kb(self) -> int:
        """High-water memory of the whole environment (its cgroup), in KiB; 0 if unknown."""
        if self._cgroup is None:
            return 0
        return await self._cgroup.peak_memory_bytes() // 1024

    async def stop(self, grace_s: float, reason: ShutdownReason | None = None) -> None:
        """Shutdown phase: the runtime first (shutdown, SIGTERM, SIGKILL after the grace),
        then a SHUTDOWN event to extensions with a 2 s budget; every process goes."""
        if self.state in (EnvironmentState.STOPPED, EnvironmentState.STOPPING):
            return
        was_dead = self.state is EnvironmentState.DEAD
        reason = reason or self.shutdown_reason
        self.state = EnvironmentState.STOPPING
        if self._launched is not None:
            process = self._launched.process
            if not was_dead and self._transport is not None:
                with contextlib.suppress(ConnectionResetError):
                    self._transport.send({"t": "shutdown"})
            half = grace_s / 2 if grace_s else 0.01
            try:
                await asyncio.wait_for(process.wait(), half)
            except TimeoutError:
                signal_process_group(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), half)
            # Anything the runtime left behind in its group goes too.
            signal_process_group(process.pid, signal.SIGKILL)
        await self._stop_extensions(reason)
        if self._init_boost_end is not None:
            await self._init_boost_end  # a quick write: not to race the removal below
        if self._cgroup is not None:
            # Every process of the environment, wherever it moved to, before waiting on pipes.
            await self._cgroup.remove()
        if self._launched is not None:
            await self._launched.process.wait()
        await self._release_resources()
        await self._launcher.isolation.release(self.env_id)
        self.state = EnvironmentState.STOPPED

    async def _stop_extensions(self, reason: ShutdownReason) -> None:
        if not self._extension_processes:
            return
        if self._session is not None:
            deadline_ms = int(time.time() * 1000) + int(EXTENSION_SHUTDOWN_S * 1000)
            self._session.extensions.dispatch(
                {"eventType": "SHUTDOWN", "shutdownReason": reason.value, "deadlineMs": deadline_ms}
            )
        waits = [asyncio.ensure_future(p.wait()) for p in self._extension_processes]
        await asyncio.wait(waits, timeout=EXTENSION_SHUTDOWN_S)
        for process in self._extension_processes:
            signal_process_group(process.pid, signal.SIGKILL)
        await asyncio.gather(*waits, return_exceptions=True)

    async def _kill(self, reason: ShutdownReason) -> None:
        self.state = EnvironmentState.DEAD
        self.shutdown_reason = reason
        if self._launched is not None:
            signal_process_group(self._launched.process.pid, signal.SIGKILL)
        if self._cgroup is not None and not self._extension_processes:
            # Descendants that left the process group go too (extensions stay for SHUTDOWN).
            await self._cgroup.kill_all()

    async def _exit_code(self) -> int | None:
        if self._launched is None:
            return None
        try:
            return await asyncio.wait_for(self._launched.process.wait(), _EXIT_STATUS_WAIT_S)
        except TimeoutError:
            signal_process_group(self._launched.process.pid, signal.SIGKILL)
            return None

    async def _release_resources(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._endpoint is not None:
            await self._runtime_api.close(self._endpoint)
            self._endpoint = None
        tasks = [*self._output_tasks, *([self._exit_watch] if self._exit_watch else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._output_tasks.clear()
        self._exit_watch = None

    async def _watch_exit(self, process: RuntimeProcess) -> None:
        await process.wait()
        # Output still in the pipes belongs to what the runtime was doing when it died.
        if self._output_tasks:
            await asyncio.wait(self._output_tasks, timeout=0.5)
        if self._transport is not None:
            self._transport.inbox.close()
        if self.on_exit is not None:
            self.on_exit(self)

    async def _pump_output(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_OUTPUT_CHUNK):
            self._write_log(chunk)


def _error_type_of(payload: bytes, default: str) -> str:
    try:
        value = orjson.loads(payload).get("errorType")
    except (orjson.JSONDecodeError, AttributeError):
        return default
    return str(value) if value else default


async def _notify_on_exit(process: asyncio.subprocess.Process, hub: ExtensionHub) -> None:
    await process.wait()
    hub.notify()
