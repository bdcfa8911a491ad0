"""One warm execution environment: a native runtime process and its state machine.

    NEW -> STARTING -> IDLE <-> BUSY -> STOPPING -> STOPPED
                  \\______________\\________________-> DEAD (crashed, timed out, init failed)

The node sends one ``invoke`` frame at a time and waits for ``result``/``error``.
Output the runtime sends as ``log`` frames, and raw bytes it writes to its
stdout/stderr descriptors, go to the log of whatever the environment is doing.
A timeout kills the whole process group; so does stopping after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
import time
from collections import deque
from datetime import UTC, datetime

import orjson

from faas.errors import (
    RUNTIME_EXIT_ERROR,
    SANDBOX_TIMEDOUT,
    InitFailed,
    InvokeTimedOut,
    RuntimeExited,
)
from faas.models import FunctionConfig, InvocationRequest
from faas.observe.logs import InvocationLog
from faas.pool.channel import ControlChannel, Frame
from faas.sandbox.launcher import LaunchedRuntime, Launcher, signal_process_group

_OUTPUT_CHUNK = 64 * 1024
_EXIT_STATUS_WAIT_S = 2.0


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
    if returncode is None:
        return "signal: killed"
    if returncode < 0:
        name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        return "signal: killed" if name == "kill" else f"signal: {name}"
    return f"exit status {returncode}"


class Environment:
    """A runtime process serving invocations of one function configuration, one at a time."""

    __slots__ = (
        "_channel",
        "_closed",
        "_launched",
        "_launcher",
        "_log",
        "_output_tasks",
        "_unclaimed",
        "_waiter",
        "code_directory",
        "config",
        "init_duration_ms",
        "init_timings",
        "invocations",
        "last_used",
        "state",
    )

    def __init__(self, config: FunctionConfig, code_directory: str, launcher: Launcher) -> None:
        self.config = config
        self.code_directory = code_directory
        self._launcher = launcher
        self.state = EnvironmentState.NEW
        self._launched: LaunchedRuntime | None = None
        self._channel: ControlChannel | None = None
        self._waiter: asyncio.Future[Frame] | None = None
        # Frames that arrived while nobody waited (e.g. `ready` before start() awaits it).
        self._unclaimed: deque[Frame] = deque()
        self._closed = asyncio.Event()
        self._log: InvocationLog | None = None
        self._output_tasks: list[asyncio.Task[None]] = []
        self.init_duration_ms = 0.0
        # Where a cold start's time went, in ms: spawn, runtime_init, function_init.
        self.init_timings: dict[str, float] = {}
        self.invocations = 0
        self.last_used = time.monotonic()

    @property
    def is_alive(self) -> bool:
        return not self._closed.is_set() and self.state not in (
            EnvironmentState.DEAD,
            EnvironmentState.STOPPED,
        )

    @property
    def pid(self) -> int | None:
        return self._launched.process.pid if self._launched else None

    @property
    def log_stream_name(self) -> str:
        return self._launched.log_stream_name if self._launched else ""

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
        self._launched = await self._launcher.launch(self.config, self.code_directory)
        spawn_ms = (time.perf_counter() - started) * 1000
        loop = asyncio.get_running_loop()
        _, channel = await loop.connect_accepted_socket(
            lambda: ControlChannel(self._on_frame, self._on_closed), self._launched.control
        )
        self._channel = channel
        process = self._launched.process
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                self._output_tasks.append(asyncio.create_task(self._pump_output(stream)))
        frame = await self._await_frame(init_timeout_s)
        self.init_duration_ms = (time.perf_counter() - started) * 1000
        if frame is None:
            await self._kill()
            raise InitFailed(
                "Runtime.InitTimeout",
                _error_json(
                    "Runtime.InitTimeout",
                    f"Init did not finish within {init_timeout_s:g} seconds",
                ),
            )
        kind = frame.get("t")
        if kind == "ready":
            function_init_ms = float(frame.get("function_init_ms") or 0.0)
            self.init_timings = {
                "spawn": spawn_ms,
                "runtime_init": max(0.0, self.init_duration_ms - spawn_ms - function_init_ms),
                "function_init": function_init_ms,
            }
            self.state = EnvironmentState.IDLE
            self._log = None
            return
        await self._kill()
        if kind == "init_error":
            payload = bytes(frame.get("payload") or b"{}")
            raise InitFailed(_error_type_of(payload, "Runtime.Unknown"), payload)
        description = _exit_description(await self._exit_code())
        raise InitFailed(
            RUNTIME_EXIT_ERROR,
            _error_json(
                RUNTIME_EXIT_ERROR,
                f"RequestId: {request_id} Error: Runtime exited with error: {description}",
            ),
        )

    async def invoke(self, request: InvocationRequest, log: InvocationLog) -> InvokeOutcome:
        """Run one invocation within the function's timeout.

        Raises:
            InvokeTimedOut: the deadline passed; the environment is dead.
            RuntimeExited: the runtime died mid-invoke; the environment is dead.
        """
        if self.state is not EnvironmentState.IDLE or self._channel is None:
            raise RuntimeError(f"environment cannot invoke from {self.state.value}")
        self.state = EnvironmentState.BUSY
        self._log = log
        timeout_s = self.config.timeout_s
        started = time.time()
        frame: Frame | None = {}
        try:
            self._channel.send(
                {
                    "t": "invoke",
                    "id": request.request_id,
                    "payload": request.payload,
                    "deadline_ms": int((started + timeout_s) * 1000),
                    "arn": request.invoked_arn,
                    "trace_id": request.trace_id,
                    "client_context": request.client_context,
                    "cognito_identity": None,
                }
            )
        except ConnectionResetError:
            pass  # died while idle: reported below as an exit
        else:
            frame = await self._await_frame(timeout_s)
        finally:
            self._log = None
        if frame is None:
            await self._kill()
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
            error_type = str(frame.get("error_type") or "") or None if is_error else None
            return InvokeOutcome(payload, is_error, error_type, int(frame.get("max_rss_kb") or 0))
        await self._kill()
        description = _exit_description(await self._exit_code())
        raise RuntimeExited(
            RUNTIME_EXIT_ERROR,
            _error_json(
                RUNTIME_EXIT_ERROR,
                f"RequestId: {request.request_id} Error: Runtime exited with error: {description}",
            ),
        )

    async def stop(self, grace_s: float) -> None:
        """Shutdown phase: ask the runtime to exit, SIGTERM its group, SIGKILL after the grace."""
        if self.state in (EnvironmentState.STOPPED, EnvironmentState.STOPPING):
            return
        was_dead = self.state is EnvironmentState.DEAD
        self.state = EnvironmentState.STOPPING
        if self._launched is not None:
            process = self._launched.process
            if not was_dead and self._channel is not None:
                with contextlib.suppress(ConnectionResetError):
                    self._channel.send({"t": "shutdown"})
            try:
                await asyncio.wait_for(process.wait(), grace_s / 2 if grace_s else 0.01)
            except TimeoutError:
                signal_process_group(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), grace_s / 2 if grace_s else 0.01)
                except TimeoutError:
                    pass
            # Anything the runtime left behind in its group goes too.
            signal_process_group(process.pid, signal.SIGKILL)
            await process.wait()
        await self._release_resources()
        self.state = EnvironmentState.STOPPED

    async def _kill(self) -> None:
        self.state = EnvironmentState.DEAD
        if self._launched is not None:
            signal_process_group(self._launched.process.pid, signal.SIGKILL)

    async def _exit_code(self) -> int | None:
        if self._launched is None:
            return None
        try:
            return await asyncio.wait_for(self._launched.process.wait(), _EXIT_STATUS_WAIT_S)
        except TimeoutError:
            signal_process_group(self._launched.process.pid, signal.SIGKILL)
            return None

    async def _release_resources(self) -> None:
        if self._channel is not None:
            self._channel.close()
        for task in self._output_tasks:
            task.cancel()
        for task in self._output_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._output_tasks.clear()

    async def _await_frame(self, timeout_s: float) -> Frame | None:
        """The next result-bearing frame; ``{}`` if the socket closed; None on timeout."""
        if self._unclaimed:
            return self._unclaimed.popleft()
        if self._closed.is_set():
            return {}
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiter = None

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.get("t")
        if kind == "log":
            data = frame.get("data")
            if self._log is not None and isinstance(data, bytes):
                self._log.write(data)
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(frame)
        else:
            self._unclaimed.append(frame)

    def _on_closed(self) -> None:
        self._closed.set()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result({})

    async def _pump_output(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_OUTPUT_CHUNK):
            if self._log is not None:
                self._log.write(chunk)


def _error_json(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorType": error_type, "errorMessage": message})


def _error_type_of(payload: bytes, default: str) -> str:
    try:
        value = orjson.loads(payload).get("errorType")
    except (orjson.JSONDecodeError, AttributeError):
        return default
    return str(value) if value else default
