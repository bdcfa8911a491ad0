"""The handlers every target runs, and the zips, code directories and payloads built from them.

One module, ``app.py``, holds all of them, so faas and every baseline import the
very same code: ``app.hello`` (the warm path), ``app.echo`` (payload sizes),
``app.sleep`` (keeps an environment busy; reports its pid and start time),
``app.hold`` (busy until the benchmark answers its UDP datagram),
``app.burn`` (CPU-bound, in threads that release the GIL) and ``app.record``
(reports the event's id, send time and start time over UDP, for the async drain).
The datagrams go to the benchmark's listener, ``bench/beacon.py``.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

HELLO = "app.hello"
ECHO = "app.echo"
SLEEP = "app.sleep"
HOLD = "app.hold"
BURN = "app.burn"
RECORD = "app.record"

HANDLER_SOURCE = """\
import hashlib
import os
import socket
import threading
import time


def hello(event, context):
    return {"message": "hello"}


def echo(event, context):
    return event


def sleep(event, context):
    started = time.time()
    time.sleep(event.get("sleep_ms", 0) / 1000)
    return {"pid": os.getpid(), "started": started}


def hold(event, context):
    # Tell the benchmark this environment is busy, then wait for its go (or max_s).
    started = time.time()
    channel = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        channel.sendto(f"held {event['tag']}".encode(), tuple(event["beacon"]))
        max_s = float(event.get("max_s", 30))
        if max_s > 0:
            channel.settimeout(max_s)
            try:
                channel.recvfrom(64)
            except socket.timeout:
                pass
    finally:
        channel.close()
    return {"pid": os.getpid(), "started": started}


def burn(event, context):
    # sha256 releases the GIL on large buffers, so N threads can use N cores.
    seconds = float(event.get("seconds", 1.0))
    threads = int(event.get("threads", 1))
    block = b"x" * 65536
    stop_at = time.perf_counter() + seconds

    def spin():
        digest = hashlib.sha256()
        while time.perf_counter() < stop_at:
            digest.update(block)

    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    workers = [threading.Thread(target=spin) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {
        "cpu_s": time.process_time() - cpu_started,
        "wall_s": time.perf_counter() - wall_started,
        "threads": threads,
    }


def record(event, context):
    # Report the event's id, its send time and this start time to the benchmark.
    started = time.time()
    if "beacon" not in event:
        return {}
    channel = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        message = f"ran {event['id']} {event['sent']} {started}"
        channel.sendto(message.encode(), tuple(event["beacon"]))
    finally:
        channel.close()
    return {}
"""


def code_zip() -> bytes:
    """The deployment package: ``app.py`` alone."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.py", HANDLER_SOURCE)
    return buffer.getvalue()


def code_zip_base64() -> str:
    return base64.b64encode(code_zip()).decode()


def write_code_directory(directory: Path) -> Path:
    """Unpack ``app.py`` into ``directory`` (for the baselines) and return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(HANDLER_SOURCE, encoding="utf-8")
    return directory


def sized_payload(size_bytes: int) -> bytes:
    """A JSON object of exactly ``size_bytes`` bytes: ``{"data": "xxx..."}``."""
    skeleton = len(json.dumps({"data": ""}, separators=(",", ":")))
    filler = max(0, size_bytes - skeleton)
    return json.dumps({"data": "x" * filler}, separators=(",", ":")).encode()


def parse_size(text: str) -> int:
    """``"64KB"`` -> 65536; accepts B, KB, MB (binary multiples) and plain byte counts."""
    units = {"KB": 1024, "MB": 1024 * 1024, "B": 1}
    cleaned = text.strip().upper()
    for suffix, factor in units.items():
        if cleaned.endswith(suffix):
            return int(float(cleaned.removesuffix(suffix)) * factor)
    return int(cleaned)


def format_size(size_bytes: int) -> str:
    """65536 -> ``"64 KB"``; 6_000_000 -> ``"5.7 MB"``."""
    if size_bytes >= 1024 * 1024:
        value = size_bytes / (1024 * 1024)
        return f"{value:.0f} MB" if value.is_integer() else f"{value:.1f} MB"
    if size_bytes >= 1024:
        return f"{size_bytes / 1024:.0f} KB"
    return f"{size_bytes} B"
