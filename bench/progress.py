"""The live progress display: one bar per phase, with running req/s, errors and latency.

Design notes: rich's own refresh thread would read counters the event loop is
writing; instead the display refreshes from a task on the loop, four times a
second, reading the ``LiveStats`` the generator updates. Without a terminal (CI)
nothing animates and each finished phase is printed as one plain line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bench.loadgen import LiveStats

_REFRESH_S = 0.25


class _Phase:
    """The phase on screen now: time-based (``total`` seconds) or counted (``total`` items)."""

    __slots__ = ("description", "is_timed", "started", "stats", "task", "total")

    def __init__(
        self,
        description: str,
        task: TaskID,
        total: float,
        is_timed: bool,
        stats: LiveStats | None,
    ) -> None:
        self.description = description
        self.task = task
        self.total = total
        self.is_timed = is_timed
        self.stats = stats
        self.started = time.perf_counter()


class ProgressDisplay:
    """Shows what the benchmark is doing while it runs; ``start`` and ``stop`` it explicitly."""

    __slots__ = ("_console", "_phase", "_progress", "_refresher")

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description:<34}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            auto_refresh=False,
            transient=False,
        )
        self._phase: _Phase | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._refresher is not None:
            raise RuntimeError("the progress display is already started")
        self._progress.start()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="bench-progress")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        self._progress.stop()

    def note(self, text: str) -> None:
        """Print a line above the bars (e.g. a finished measurement)."""
        self._progress.console.print(text, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def phase(
        self,
        description: str,
        total: float,
        *,
        is_timed: bool = True,
        stats: LiveStats | None = None,
    ) -> Iterator[None]:
        """Show ``description`` until the block ends.

        Args:
            total: seconds (``is_timed``) or items (advanced with ``advance``).
            stats: live counters to show beside the bar.
        """
        task = self._progress.add_task(description, total=max(total, 1e-9), stats="")
        self._phase = _Phase(description, task, total, is_timed, stats)
        try:
            yield
        finally:
            self._update(self._phase, is_final=True)
            self._phase = None
            self._progress.remove_task(task)
            self._progress.refresh()

    def advance(self, items: float = 1.0) -> None:
        if self._phase is not None and not self._phase.is_timed:
            self._progress.advance(self._phase.task, items)

    def _update(self, phase: _Phase, is_final: bool = False) -> None:
        elapsed = time.perf_counter() - phase.started
        stats = phase.stats
        text = ""
        if stats is not None:
            rate = stats.completed / elapsed if elapsed > 0 else 0.0
            text = f"{stats.completed} ok  {rate:,.0f}/s  last {stats.last_latency_ms:.1f} ms"
            if stats.errors:
                text += f"  [red]{stats.errors} errors[/red]"
        if phase.is_timed:
            self._progress.update(phase.task, completed=min(elapsed, phase.total), stats=text)
        else:
            self._progress.update(phase.task, stats=text)
        if is_final and not self._console.is_terminal:
            self._console.print(
                f"done: {phase.description} ({elapsed:.1f} s) {text}",
                highlight=False,
                soft_wrap=True,
            )

    async def _refresh_loop(self) -> None:
        while True:
            if self._phase is not None:
                self._update(self._phase)
            self._progress.refresh()
            await asyncio.sleep(_REFRESH_S)
