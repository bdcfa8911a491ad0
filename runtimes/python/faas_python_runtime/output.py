"""Capture of everything user code writes (stdout, stderr, logging) as `log` frames.

Design notes: stdout and stderr share one sink so their relative order survives. The sink
is line-buffered: a write containing a newline sends everything pending, and pending bytes
are also sent whenever 64 KiB accumulate, so memory stays bounded however much a handler
prints. Chunks are cut on UTF-8 character boundaries so every frame is valid text.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable

LOG_CHUNK_BYTES = 64 * 1024
LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_UTF8_CONTINUATION_MASK = 0xC0
_UTF8_CONTINUATION_BITS = 0x80
_MAX_UTF8_CONTINUATIONS = 3


def _character_boundary(buffer: memoryview, start: int, stop: int) -> int:
    """Move `stop` back so it does not split a UTF-8 sequence (never past `start` + 1)."""
    for _ in range(_MAX_UTF8_CONTINUATIONS):
        if stop - 1 <= start or (buffer[stop] & _UTF8_CONTINUATION_MASK) != _UTF8_CONTINUATION_BITS:
            break
        stop -= 1
    return stop


class LogSink:
    """Buffers output bytes and hands them to `send_chunk` in pieces of at most 64 KiB."""

    __slots__ = ("_lock", "_pending", "_send_chunk")

    def __init__(self, send_chunk: Callable[[memoryview], None]) -> None:
        self._send_chunk = send_chunk
        self._pending = bytearray()
        # Reentrant: a signal handler that prints while a write holds the lock must not hang.
        self._lock = threading.RLock()

    def write_text(self, text: str) -> None:
        """Queue `text`; lone surrogates are escaped rather than failing the user's print."""
        self.write_bytes(text.encode("utf-8", "backslashreplace"))

    def write_bytes(self, data: bytes) -> None:
        """Queue `data`, sending everything if it holds a newline, else any full chunks."""
        with self._lock:
            self._pending += data
            if b"\n" in data:
                self._drain(send_partial=True)
            elif len(self._pending) >= LOG_CHUNK_BYTES:
                self._drain(send_partial=False)

    def flush(self) -> None:
        """Send everything pending."""
        with self._lock:
            self._drain(send_partial=True)

    def _drain(self, send_partial: bool) -> None:
        sent = 0
        view = memoryview(self._pending)
        try:
            end = len(view)
            while end - sent >= LOG_CHUNK_BYTES or (send_partial and sent < end):
                stop = min(sent + LOG_CHUNK_BYTES, end)
                if stop < end:
                    stop = _character_boundary(view, sent, stop)
                self._send_chunk(view[sent:stop])
                sent = stop
        finally:
            view.release()
            del self._pending[:sent]


class _BinaryStream(io.RawIOBase):
    """`sys.stdout.buffer`: raw bytes written straight into the sink."""

    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self._sink.write_bytes(chunk)
        return len(chunk)


class CapturedStream(io.TextIOBase):
    """A text stream standing in for `sys.stdout` or `sys.stderr`."""

    def __init__(self, sink: LogSink, name: str) -> None:
        super().__init__()
        self._sink = sink
        self._name = name
        self._buffer = _BinaryStream(sink)

    @property
    def name(self) -> str:
        return self._name

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    @property
    def buffer(self) -> _BinaryStream:
        return self._buffer

    @property
    def line_buffering(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._sink.write_text(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._sink.flush()


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the invocation in progress ("" during init)."""

    def __init__(self) -> None:
        super().__init__()
        self.request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class LambdaLogHandler(logging.Handler):
    """The root-logger handler Lambda installs: formatted records go to the log sink."""

    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.log_sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log_sink.write_text(self.format(record))
        except Exception:
            self.handleError(record)


class OutputCapture:
    """The installed capture: the sink and the filter that carries the current request id."""

    __slots__ = ("request_id_filter", "sink")

    def __init__(self, sink: LogSink, request_id_filter: RequestIdFilter) -> None:
        self.sink = sink
        self.request_id_filter = request_id_filter

    @classmethod
    def install(cls, send_chunk: Callable[[memoryview], None]) -> OutputCapture:
        """Replace `sys.stdout`/`sys.stderr` and add Lambda's handler to the root logger.

        The root level is left as it is (WARNING), as on Lambda.
        """
        sink = LogSink(send_chunk)
        sys.stdout = CapturedStream(sink, "<stdout>")
        sys.stderr = CapturedStream(sink, "<stderr>")
        formatter = logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT)
        formatter.converter = time.gmtime
        request_id_filter = RequestIdFilter()
        handler = LambdaLogHandler(sink)
        handler.setFormatter(formatter)
        handler.addFilter(request_id_filter)
        logging.getLogger().addHandler(handler)
        return cls(sink, request_id_filter)
