"""Warm-IPC baseline worker: one pre-started process answering msgpack frames on a socket.

Run as ``python -S worker.py CODE_DIR FD``: FD is this process's end of a connected
Unix stream socket. Frames are msgpack maps, like faas's native runtime protocol:
it sends ``{"t": "ready"}`` once, then answers each ``{"t": "invoke", "id": int,
"handler": "module.function", "payload": bin}`` with ``{"id": int, "payload": bin}``
(or ``{"id": int, "error": str}``), in order. End of file means exit. This is the
least an isolated-process design can do per invoke: one frame each way, no more.
"""

from __future__ import annotations

import importlib
import json
import socket
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgpack

Handler = Callable[[Any, Any], Any]  # Any: handlers take and return arbitrary JSON values


def _resolve(cache: dict[str, Handler], name: str) -> Handler:
    handler = cache.get(name)
    if handler is None:
        module_name, _, function_name = name.rpartition(".")
        handler = getattr(importlib.import_module(module_name), function_name)
        cache[name] = handler
    return handler


def _answer(cache: dict[str, Handler], frame: dict[str, Any]) -> dict[str, Any]:
    context = SimpleNamespace(
        aws_request_id=str(frame["id"]), get_remaining_time_in_millis=lambda: 30000
    )
    try:
        handler = _resolve(cache, frame["handler"])
        result = handler(json.loads(frame["payload"]), context)
        return {"id": frame["id"], "payload": json.dumps(result).encode()}
    except Exception as exc:  # a process boundary: report the failure to the server
        return {"id": frame["id"], "error": f"{type(exc).__name__}: {exc}"}


def serve(channel: socket.socket) -> int:
    """Answer invoke frames until end of file; returns the exit status."""
    cache: dict[str, Handler] = {}
    _resolve(cache, "app.hello")  # import the handler module before saying ready
    channel.sendall(msgpack.packb({"t": "ready"}, use_bin_type=True))
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 * 1024 * 1024)
    while data := channel.recv(1 << 20):
        unpacker.feed(data)
        for frame in unpacker:
            if frame.get("t") == "shutdown":
                return 0
            channel.sendall(msgpack.packb(_answer(cache, frame), use_bin_type=True))
    return 0


def main(argv: list[str]) -> int:
    sys.path.insert(0, argv[1])
    channel = socket.socket(fileno=int(argv[2]))
    try:
        return serve(channel)
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
