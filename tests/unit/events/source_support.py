"""Helpers shared by the broker source tests: specs, unique names, polling with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from faas.events.sources.base import EventSource, SourceRecord, SourceSpec, SourceUnavailable

T = TypeVar("T")

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def make_spec(
    address: str,
    mapping_uuid: str = "",
    starting_position: str = "TRIM_HORIZON",
    batch_size: int = 10,
) -> SourceSpec:
    return SourceSpec(
        address=address,
        mapping_uuid=mapping_uuid or str(uuid.uuid4()),
        function_name="consumer",
        region=REGION,
        account_id=ACCOUNT_ID,
        starting_position=starting_position,
        batch_size=batch_size,
    )


async def eventually(
    condition: Callable[[], Awaitable[T]], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Await ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def receive_ids(
    source: EventSource, count: int, timeout_s: float, max_records: int = 10
) -> list[SourceRecord]:
    """Receive until ``count`` records came (riding out ``SourceUnavailable`` like a poller)."""
    records: list[SourceRecord] = []

    async def more() -> bool:
        with contextlib.suppress(SourceUnavailable):  # tried again after eventually's pause
            records.extend(await source.receive(max_records, 0.2))
        return len(records) >= count

    await eventually(more, timeout_s, f"{count} records (have {len(records)})")
    return records


def item_ids(records: Sequence[SourceRecord]) -> list[str]:
    return [record.item_id for record in records]
