"""The baselines' front door: a bare aiohttp + uvloop server with faas's URL shape.

Run as ``python -m bench.baselines.server --mode MODE --code-dir DIR``; it prints
``baseline listening on http://HOST:PORT`` once serving and stops on SIGTERM. It
answers ``POST /2015-03-31/functions`` (records FunctionName -> Handler; the code
is always ``app.py`` in DIR) and ``POST /2015-03-31/functions/{name}/invocations``
by running the handler in one of three ways (``--mode``):

- ``inprocess``: call the handler in this process (the ceiling for a Python front door);
- ``ipc``: hand the payload to one pre-started worker process over a Unix socket in
  msgpack frames (the floor for any design that isolates handlers in processes);
- ``spawn``: start a fresh interpreter for every invoke (what a naive runner does).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import os
import signal
import site
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import msgpack
import uvloop
from aiohttp import web

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
ONCE_SCRIPT = Path(__file__).with_name("once.py")
FUNCTIONS_PATH = "/2015-03-31/functions"
INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
_WORKER_START_TIMEOUT_S = 30.0


class Runner(Protocol):
    """Runs one invocation of ``handler`` (``module.function``) on a JSON payload."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run(self, handler: str, payload: bytes) -> bytes: ...


class InProcessRunner:
    """Calls the handler right here, on the event loop (as a bare server would)."""

    __slots__ = ("_code_dir", "_handlers")

    def __init__(self, code_dir: str) -> None:
        self._code_dir = code_dir
        # Any: handlers take and return arbitrary JSON values.
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}

    async def start(self) -> None:
        sys.path.insert(0, self._code_dir)
        importlib.import_module("app")

    async def stop(self) -> None:
        return None

    async def run(self, handler: str, payload: bytes) -> bytes:
        function = self._handlers.get(handler)
        if function is None:
            module_name, _, name = handler.rpartition(".")
            function = getattr(importlib.import_module(module_name), name)
            self._handlers[handler] = function
        context = SimpleNamespace(
            aws_request_id="inprocess", get_remaining_time_in_millis=_remaining_ms
        )
        return json.dumps(function(json.loads(payload), context)).encode()


def _remaining_ms() -> int:
    return 30000


def _runtime_env() -> dict[str, str]:
    """The worker's environment: -S skips site, so site-packages (msgpack) go on PYTHONPATH."""
    site_dirs = [path for path in site.getsitepackages() if os.path.isdir(path)]
    return {"PATH": os.defpath, "PYTHONPATH": os.pathsep.join(site_dirs)}


class IpcRunner:
    """One pre-started worker; requests are pipelined to it and answered in order."""

    __slots__ = ("_code_dir", "_ids", "_pending", "_process", "_reader", "_writer")

    def __init__(self, code_dir: str) -> None:
        self._code_dir = code_dir
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-S",
                str(WORKER_SCRIPT),
                self._code_dir,
                str(child.fileno()),
                pass_fds=(child.fileno(),),
                env=_runtime_env(),
            )
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)
        async with asyncio.timeout(_WORKER_START_TIMEOUT_S):
            ready = await self._first_frame(reader, unpacker)
        if ready.get("t") != "ready":
            raise RuntimeError(f"worker did not start: {ready}")
        self._reader = asyncio.create_task(self._read_answers(reader, unpacker))

    @staticmethod
    async def _first_frame(
        reader: asyncio.StreamReader, unpacker: msgpack.Unpacker
    ) -> dict[str, Any]:
        while True:
            for frame in unpacker:
                return dict(frame)
            data = await reader.read(1 << 20)
            if not data:
                raise RuntimeError("worker closed its socket before it was ready")
            unpacker.feed(data)

    async def _read_answers(self, reader: asyncio.StreamReader, unpacker: msgpack.Unpacker) -> None:
        while data := await reader.read(1 << 20):
            unpacker.feed(data)
            for frame in unpacker:
                future = self._pending.pop(frame["id"], None)
                if future is None or future.done():
                    continue
                if "error" in frame:
                    future.set_exception(RuntimeError(frame["error"]))
                else:
                    future.set_result(frame["payload"])
        for future in self._pending.values():
            future.set_exception(RuntimeError("worker exited"))

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()  # end of file: the worker exits
        if self._process is not None:
            try:
                async with asyncio.timeout(5):
                    await self._process.wait()
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def run(self, handler: str, payload: bytes) -> bytes:
        if self._writer is None:
            raise RuntimeError("the IPC runner is not started")
        request_id = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        frame = {"t": "invoke", "id": request_id, "handler": handler, "payload": payload}
        self._writer.write(msgpack.packb(frame, use_bin_type=True))
        await self._writer.drain()
        return await future


class SpawnRunner:
    """A fresh ``python -S once.py`` per invoke, at most ``limit`` at a time."""

    __slots__ = ("_code_dir", "_slots")

    def __init__(self, code_dir: str, limit: int) -> None:
        self._code_dir = code_dir
        self._slots = asyncio.Semaphore(limit)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def run(self, handler: str, payload: bytes) -> bytes:
        async with self._slots:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-S",
                str(ONCE_SCRIPT),
                self._code_dir,
                handler,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env={"PATH": os.defpath},
            )
            output, _ = await process.communicate(payload)
        if process.returncode != 0:
            raise RuntimeError(f"handler process exited with {process.returncode}")
        return output


FUNCTIONS_KEY = web.AppKey("functions", dict[str, str])
RUNNER_KEY = web.AppKey("runner", Runner)


async def create_function(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[FUNCTIONS_KEY][body["FunctionName"]] = body["Handler"]
    return web.json_response({"FunctionName": body["FunctionName"]}, status=201)


async def invoke(request: web.Request) -> web.Response:
    handler = request.app[FUNCTIONS_KEY].get(request.match_info["name"])
    if handler is None:
        return web.json_response({"message": "Function not found"}, status=404)
    payload = await request.read() or b"{}"
    try:
        result = await request.app[RUNNER_KEY].run(handler, payload)
    except Exception as exc:  # a request boundary: answer 500 like a failed invoke
        return web.json_response({"errorMessage": str(exc)}, status=500)
    return web.Response(body=result, content_type="application/json")


def build_app(runner: Runner) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    # The registry of FunctionName -> handler is the one piece of mutable app state.
    app[FUNCTIONS_KEY] = {}
    app[RUNNER_KEY] = runner
    app.router.add_post(FUNCTIONS_PATH, create_function)
    app.router.add_post(INVOKE_PATH, invoke)
    return app


def make_runner(mode: str, code_dir: str, spawn_limit: int) -> Runner:
    if mode == "inprocess":
        return InProcessRunner(code_dir)
    if mode == "ipc":
        return IpcRunner(code_dir)
    return SpawnRunner(code_dir, spawn_limit)


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then stop the runner and the site."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    runner = make_runner(args.mode, args.code_dir, args.spawn_limit)
    await runner.start()
    web_runner = web.AppRunner(build_app(runner), access_log=None)
    await web_runner.setup()
    try:
        site_ = web.TCPSite(web_runner, args.host, args.port)
        await site_.start()
        port = web_runner.addresses[0][1]
        print(f"baseline listening on http://{args.host}:{port}", flush=True)
        await stopping.wait()
    finally:
        await web_runner.cleanup()
        await runner.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.server", description=__doc__)
    parser.add_argument("--mode", choices=("inprocess", "ipc", "spawn"), required=True)
    parser.add_argument("--code-dir", required=True, help="directory holding app.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--spawn-limit", type=int, default=64, help="spawn mode: concurrent")
    uvloop.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
