"""GroupCommitter: concurrent submissions share writes; failures reach exactly their batch."""

from __future__ import annotations

import asyncio

import pytest

from faas.store.group_commit import GroupCommitter

pytestmark = pytest.mark.timeout(10)


class Recorder:
    """A write that keeps every batch, fails batches holding ``poison``, and can be held."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def write(self, items: list[str]) -> None:
        self.entered.set()
        await self.gate.wait()
        if "poison" in items:
            raise ValueError("cannot write poison")
        self.batches.append(list(items))


async def test_items_submitted_during_a_write_share_the_next_one() -> None:
    recorder = Recorder()
    committer = GroupCommitter("test", recorder.write, flushers=1)
    await committer.start()
    recorder.gate.clear()
    first = asyncio.create_task(committer.submit("a"))
    await recorder.entered.wait()  # "a" is being written; the rest must wait for the next write
    rest = [asyncio.create_task(committer.submit(f"b{i}")) for i in range(50)]
    recorder.gate.set()
    await asyncio.gather(first, *rest)
    assert recorder.batches == [["a"], [f"b{i}" for i in range(50)]]
    await committer.stop()


async def test_a_failed_write_fails_only_its_own_batch() -> None:
    recorder = Recorder()
    committer = GroupCommitter("test", recorder.write, flushers=1)
    await committer.start()
    doomed = await asyncio.gather(
        committer.submit("x"), committer.submit("poison"), return_exceptions=True
    )
    assert all(isinstance(outcome, ValueError) for outcome in doomed)
    await committer.submit("y")
    assert recorder.batches == [["y"]]
    await committer.stop()


async def test_stop_writes_what_is_pending_then_refuses() -> None:
    recorder = Recorder()
    committer = GroupCommitter("test", recorder.write, flushers=2, max_batch=3)
    await committer.start()
    recorder.gate.clear()
    pending = [asyncio.create_task(committer.submit(f"e{i}")) for i in range(10)]
    await recorder.entered.wait()
    stopping = asyncio.create_task(committer.stop())
    recorder.gate.set()
    await stopping
    await asyncio.gather(*pending)
    assert sorted(item for batch in recorder.batches for item in batch) == sorted(
        f"e{i}" for i in range(10)
    )
    assert max(len(batch) for batch in recorder.batches) <= 3
    with pytest.raises(RuntimeError):
        await committer.submit("late")


async def test_stop_fails_what_it_could_not_write_in_time() -> None:
    recorder = Recorder()
    committer = GroupCommitter("test", recorder.write, flushers=1)
    await committer.start()
    recorder.gate.clear()
    stuck = asyncio.create_task(committer.submit("stuck"))
    await recorder.entered.wait()
    await committer.stop(drain_timeout_s=0.05)
    with pytest.raises(RuntimeError, match="stopped"):
        await stuck
