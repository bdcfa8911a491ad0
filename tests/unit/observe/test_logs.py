from __future__ import annotations

from pathlib import Path

from faas.observe.logs import TAIL_BYTES, InvocationLog, LogSink, report_line


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
