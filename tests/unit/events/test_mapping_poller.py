"""A mapping's poller keeps polling through a fault its source did not foresee."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from faas.config import EventsConfig
from faas.events.mappings.batches import PROBLEM_SOURCE, PollerContext
from faas.events.mappings.model import EventSourceMapping, MappingState
from faas.events.mappings.poller import MappingPoller
from faas.events.sources.base import SourceKind, SourceRecord, SourceSpec
from faas.observe.metrics import Metrics

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:poller-test"


class BuggySource:
    """A queue source whose first receive fails with an error no source should raise.

    A fake on purpose: the real sources turn every broker fault into SourceUnavailable,
    so a bug in one is the only way to get here.
    """

    kind = SourceKind.QUEUE

    def __init__(self) -> None:
        self.receives = 0
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def receive(self, max_records: int, wait_s: float) -> list[SourceRecord]:
        self.receives += 1
        if self.receives == 1:
            raise KeyError("a field the source did not expect")
        await asyncio.sleep(min(wait_s, 0.01))
        return []

    async def ack(self, records: Sequence[SourceRecord]) -> None:
        pass

    async def release(self, records: Sequence[SourceRecord]) -> None:
        pass

    def event(self, records: Sequence[SourceRecord]) -> dict[str, Any]:
        return {"Records": []}


async def test_an_unexpected_receive_error_is_reported_and_polling_goes_on(
    monkeypatch: Any,
) -> None:
    source = BuggySource()
    monkeypatch.setattr("faas.events.sources.open_source", lambda spec: source)
    results: list[str] = []
    config = EventsConfig(poller_backoff_min_s=0.01, poller_backoff_max_s=0.01)
    # Nothing is received, so nothing is invoked: the invoke side stays unset.
    context = PollerContext(config, None, None, None, Metrics(),  # type: ignore[arg-type]
                            lambda _uuid, result: results.append(result))  # fmt: skip
    mapping = EventSourceMapping(
        uuid="6d9e1c2a-0000-4000-8000-000000000000", function_name="f", qualifier=None,
        event_source_arn=QUEUE_ARN, source_kind=SourceKind.QUEUE, enabled=True,
        state=MappingState.ENABLED, last_modified=time.time(), batch_size=10,
    )  # fmt: skip
    spec = SourceSpec(QUEUE_ARN, mapping.uuid, "f", "us-east-1", "123456789012")
    poller = MappingPoller(mapping, spec, "arn:aws:lambda:us-east-1:1:function:f", context)
    await poller.start()
    try:
        deadline = time.monotonic() + 5
        while source.receives < 3:  # the loop that met the error went on receiving
            assert time.monotonic() < deadline, "polling stopped after the receive error"
            await asyncio.sleep(0.01)
    finally:
        await poller.stop(drain_timeout_s=1)
    assert results[0] == PROBLEM_SOURCE
    assert source.stopped
