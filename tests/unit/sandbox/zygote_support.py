"""Helpers for the zygote tests: requests, code directories, and a frame client for a runtime."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import msgpack

from faas.sandbox.lambda_env import base_environment, find_runtime_dir, native_python_path
from faas.sandbox.namespaces import LAMBDA_MAX_OPEN_FILES, IsolationSpec
from faas.sandbox.zygote_requests import ForkRequest

PYTHON_PATH = native_python_path(find_runtime_dir())
RECEIVE_TIMEOUT_S = 20.0

Frame = dict[str, Any]  # Any: msgpack values


def write_code(directory: Path, files: dict[str, str]) -> str:
    """Write ``files`` (name -> source) into ``directory``; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (directory / name).write_text(textwrap.dedent(source))
    return str(directory)


def function_env(handler: str = "app.handler", **extra: str) -> dict[str, str]:
    """The variables an environment of function ``fn`` gets, as the launcher builds them."""
    return {
        **base_environment("/opt"),
        "PYTHONPATH": PYTHON_PATH,
        "_HANDLER": handler,
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123",
        **extra,
    }


def tmpdir_isolation(tmp_directory: Path) -> IsolationSpec:
    """Tmpdir mode: no namespace, TMPDIR only, Lambda's rlimits."""
    return IsolationSpec(
        is_unshared=False,
        tmp_directory=tmp_directory,
        keep_paths=(),
        opt_directory=None,
        user_ids=None,
        max_open_files=LAMBDA_MAX_OPEN_FILES,
        max_file_bytes=512 * 1024 * 1024,
        env={"TMPDIR": str(tmp_directory)},
    )


def fork_request(
    code_dir: str,
    tmp_directory: Path,
    control: socket.socket | None,
    env: dict[str, str] | None = None,
    cgroup_procs: list[str] | None = None,
) -> ForkRequest:
    isolation = tmpdir_isolation(tmp_directory)
    return ForkRequest(
        env={**(env or function_env()), **isolation.env},
        cwd=code_dir,
        cgroup_procs=cgroup_procs or [],
        isolation=isolation,
        control=control,
    )


class FrameClient:
    """The node's end of a native runtime's control socket, for tests."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._unpacker = msgpack.Unpacker(raw=False)

    async def receive(self) -> Frame | None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            while True:
                for frame in self._unpacker:
                    return dict(frame)
                data = await loop.sock_recv(self.sock, 1 << 20)
                if not data:
                    return None
                self._unpacker.feed(data)

    async def receive_until(self, *kinds: str) -> tuple[Frame | None, str]:
        """Frames until one of ``kinds`` (or end of file); the log text seen on the way."""
        logs = []
        while True:
            frame = await self.receive()
            if frame is None or frame["t"] in kinds:
                return frame, "".join(logs)
            if frame["t"] == "log":
                logs.append(bytes(frame["data"]).decode())

    async def invoke(self, event: Any = None) -> Any:
        """One invocation; the decoded result (or the error frame's payload)."""
        frame = {
            "t": "invoke",
            "id": "req-1",
            "payload": json.dumps(event or {}).encode(),
            "deadline_ms": int(time.time() * 1000) + 30_000,
            "arn": "arn:aws:lambda:us-east-1:000000000000:function:fn",
            "trace_id": None,
            "client_context": None,
            "cognito_identity": None,
        }
        await asyncio.get_running_loop().sock_sendall(
            self.sock, msgpack.packb(frame, use_bin_type=True)
        )
        answer, _ = await self.receive_until("result", "error")
        assert answer is not None, "the runtime closed the socket"
        return json.loads(bytes(answer["payload"]))

    def close(self) -> None:
        self.sock.close()
