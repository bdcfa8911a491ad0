"""Logging set-up for the node and the request-id context variable (the only ambient value)."""

from __future__ import annotations

import contextvars
import logging
import sys

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str = "INFO") -> None:
    """Send the node's own logs to stderr with the request id of the current request."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # DEBUG is for faas's own loggers: libraries stay at INFO at most (aiosqlite's DEBUG
    # prints every SQL statement with its parameters, broker passwords included).
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root.setLevel(max(numeric, logging.INFO))
    logging.getLogger("faas").setLevel(numeric)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
