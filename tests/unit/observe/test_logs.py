from __future__ import annotations

import asyncio
import time
from pathlib import Path

from faas.observe.logs import (
    MAX_PENDING_RECORDS,
    TAIL_BYTES,
    InvocationLog,
    LogSink,
    report_line,
)


def test_report_line_has_lambdas_exact_format() -> None:
    line = report_line("id-1", 15.744, 128, 56, 130.49)
    assert line == (
        "REPORT RequestId: id-1\tDuration: 15.74 ms\tBilled Duration: 16 ms\t"
        "Memory Size: 128 MB\tMax Memory Used: 56 MB\tInit Duration: 130.49 ms\t"
    )
    warm = report_line("id-2", 0.2, 128, 40, None, "timeout")
    assert "Init Duration" not in warm and warm.endswith("Status: timeout\t")
    failed = report_line("id-3", 1, 128, 40, None, "error", "Runtime.ExitError")
    assert failed.endswith("Status: error\tError Type: Runtime.ExitError\t")


def test_log_keeps_head_up_to_limit_and_exact_tail() -> None:
    log = InvocationLog(limit=10_000)
    for i in range(5000):
        log.write(f"line {i}\n".encode())
    log.write_line("REPORT end")
    tail = log.tail()
    assert len(tail) == TAIL_BYTES
    assert tail.endswith(b"REPORT end\n")
    body = log.body()
    assert body.startswith(b"line 0\n")
    assert b"truncated" in body
    assert len(body) < 10_100


async def test_sink_writes_per_function_files(tmp_path: Path) -> None:
    sink = LogSink(tmp_path)
    await sink.start()
    sink.emit("fn", b"hello\n")
    sink.emit("fn", b"world\n")
    await sink.stop()
    assert sink.path_for("fn").read_bytes() == b"hello\nworld\n"


def test_tail_under_the_limit_is_the_last_4_kb_of_everything() -> None:
    log = InvocationLog(limit=1_000_000)
    written = b"".join(f"{i:05d}\n".encode() for i in range(2000))
    for start in range(0, len(written), 7):
        log.write(written[start : start + 7])
    assert log.tail() == written[-TAIL_BYTES:]
    assert log.body() == written
    assert log.dropped_bytes == 0


def test_tail_stays_exact_across_the_limit() -> None:
    log = InvocationLog(limit=5000)
    written = b""
    for i in range(3000):
        chunk = f"{i}:".encode() * (i % 5 + 1) + b"\n"
        log.write(chunk)
        written += chunk
        if i % 97 == 0:
            assert log.tail() == written[-TAIL_BYTES:]
    assert log.tail() == written[-TAIL_BYTES:]
    body = log.body()
    assert body.startswith(written[:5000])
    assert log.dropped_bytes == len(written) - 5000
    assert body.endswith(b"[faas] %d bytes of log output truncated\n" % log.dropped_bytes)


def test_empty_writes_change_nothing() -> None:
    log = InvocationLog(limit=10)
    log.write(b"")
    log.write(b"0123456789")
    log.write(b"")
    assert log.body() == b"0123456789" and log.dropped_bytes == 0


async def test_sink_stop_writes_records_emitted_while_a_batch_is_written(tmp_path: Path) -> None:
    sink = LogSink(tmp_path)
    await sink.start()
    for round_ in range(5):
        for i in range(200):
            sink.emit("fn", b"%d-%d\n" % (round_, i))
        # The writer takes this batch before the next round's records arrive.
        deadline = time.monotonic() + 10
        while sink._pending:
            assert time.monotonic() < deadline, "the writer never took the batch"
            await asyncio.sleep(0.001)
    await sink.stop()
    lines = sink.path_for("fn").read_bytes().splitlines()
    assert lines == [b"%d-%d" % (r, i) for r in range(5) for i in range(200)]
    assert sink.dropped_records == 0


async def test_sink_counts_records_it_has_no_room_for(tmp_path: Path) -> None:
    sink = LogSink(tmp_path)  # not started: nothing drains the pending records
    for i in range(MAX_PENDING_RECORDS + 25):
        sink.emit("fn", b"%d\n" % i)
    assert sink.dropped_records == 25
