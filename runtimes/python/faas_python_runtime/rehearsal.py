"""A dry run of the runtime's start-up paths, for a parked child to do while it waits.

Design notes: a forked child shares the zygote's memory until it writes to it, and the
first write to each shared page costs a copy (a copy-on-write fault, ~3 us on a VM). Every
reference count the runtime's start touches is such a write: some 350 pages between a
`spawn` and `ready`. A parked child has time to spare, so it takes those faults beforehand
by running the same code on throwaway values: environment updates, msgpack and JSON, a
thread, the log formatter and sink, a frame channel over a socketpair, ctypes, compiling.
Each step leaves nothing behind that the environment would see (what it changes, the child
replaces while it specializes). Only the pages these paths write are copied, not the whole
heap, so the environment still shares the rest with the zygote. A step that fails is
skipped: a rehearsal only makes starting faster, never different.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import socket
import sys
import threading
import time

import msgpack

from .channel import Channel
from .output import LOG_DATE_FORMAT, LOG_FORMAT, LogSink

_VARIABLES = 40  # about as many as an environment gets
_INVOKE = {
    "t": "invoke",
    "id": "00000000-0000-4000-8000-000000000000",
    "payload": b"{}",
    "deadline_ms": 0,
    "arn": "arn:aws:lambda:us-east-1:000000000000:function:rehearsal",
    "trace_id": None,
    "client_context": None,
    "cognito_identity": None,
}


def rehearse() -> None:
    """Run each step once; afterwards the environment and import caches are empty again."""
    for step in (_environment, _frames, _json, _thread, _logging, _channel, _native, _compile):
        with contextlib.suppress(Exception):
            step()
    os.environ.clear()
    sys.path_importer_cache.clear()


def _environment() -> None:
    os.environ.update({f"_FAAS_REHEARSAL_{i}": "x" * 40 for i in range(_VARIABLES)})
    os.environ.clear()
    time.tzset()
    os.path.abspath(os.getcwd())


def _frames() -> None:
    packed = msgpack.Packer(use_bin_type=True).pack(_INVOKE)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(packed)
    next(unpacker)


def _json() -> None:
    json.loads(json.dumps({"key": [1, "value", None, 1.5, {"nested": True}]}))


def _thread() -> None:
    thread = threading.Thread(target=time.perf_counter, name="rehearsal", daemon=True)
    thread.start()
    thread.join()


def _logging() -> None:
    formatter = logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT)
    formatter.converter = time.gmtime
    record = logging.LogRecord("rehearsal", logging.WARNING, __file__, 1, "%s", ("x",), None)
    record.aws_request_id = ""
    formatter.format(record)
    LogSink(lambda chunk: None).write_text("rehearsal\n")


def _channel() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    channel = Channel(ours)
    try:
        channel.send({"t": "log", "data": b"rehearsal"})
        theirs.recv(4096)
    finally:
        channel.close()
        theirs.close()


def _native() -> None:
    ctypes.CDLL(None, use_errno=True)
    resource.getrusage(resource.RUSAGE_SELF)


def _compile() -> None:
    exec(compile("value = [1, 2]\n", "<rehearsal>", "exec"), {})
