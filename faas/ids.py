"""Identifiers faas hands out: request ids (UUID version 4 text) and X-Ray trace headers.

Both draw on the system's randomness, as ``uuid.uuid4`` does, but format the bytes
directly: a request id is made for every API call, so it is on the warm invoke path.
"""

from __future__ import annotations

import os
import time


def new_request_id() -> str:
    """A random UUID (version 4, RFC 4122 variant) as lower-case hex with dashes."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def new_trace_id(now: float | None = None, *, parent: bool = True) -> str:
    """An X-Ray trace header: ``Root=1-<8 hex time>-<24 hex>[;Parent=<16 hex>];Sampled=0``."""
    random_hex = os.urandom(20).hex()  # one read of the system's randomness for both ids
    epoch_s = int(time.time() if now is None else now)
    root = f"Root=1-{epoch_s:08x}-{random_hex[:24]}"
    if parent:
        return f"{root};Parent={random_hex[24:]};Sampled=0"
    return f"{root};Sampled=0"
