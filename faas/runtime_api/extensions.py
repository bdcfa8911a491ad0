"""The Extensions API (``/2020-01-01/extension``): registration and lifecycle events.

Design notes: extensions register during Init, then long-poll ``event/next``. The
environment hands them INVOKE events alongside each invocation and a SHUTDOWN
event (reason ``spindown``, ``timeout`` or ``failure``, lowercase as the emulator
sends it) when it goes away. An environment is reusable only once every extension
has come back to ``event/next`` after an invocation.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_EXTENSIONS = 10
EVENT_TYPES = frozenset({"INVOKE", "SHUTDOWN"})


class ShutdownReason(enum.StrEnum):
    SPINDOWN = "spindown"  # idle reaping, code/config change, node stop
    TIMEOUT = "timeout"  # an invocation ran past its deadline
    FAILURE = "failure"  # the runtime or an extension crashed, or Init failed


class ExtensionError(Exception):
    """A call the Extensions API refuses; carries Lambda's status and errorType."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


@dataclass(slots=True)
class RegisteredExtension:
    """One extension that registered with an environment."""

    name: str
    events: frozenset[str]
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    is_waiting: bool = False  # blocked in event/next
    has_failed: bool = False


class ExtensionHub:
    """The extensions of one environment."""

    __slots__ = ("_changed", "_extensions", "init_error", "is_registration_open")

    def __init__(self) -> None:
        self._extensions: dict[str, RegisteredExtension] = {}
        self._changed = asyncio.Event()
        self.is_registration_open = True
        self.init_error: bytes | None = None

    def __len__(self) -> int:
        return len(self._extensions)

    def register(self, name: str, events: list[str]) -> str:
        """Register an extension; returns its identifier.

        Raises:
            ExtensionError: registration is closed, the name or events are invalid,
                or there are already ten extensions.
        """
        if not self.is_registration_open:
            raise ExtensionError(403, "Extension.RegistrationClosed", "Registration is closed")
        if not name:
            raise ExtensionError(
                403, "Extension.InvalidExtensionName", "Lambda-Extension-Name is missing"
            )
        unknown = [event for event in events if event not in EVENT_TYPES]
        if unknown:
            raise ExtensionError(
                400, "Extension.InvalidEventType", f"Unknown event types: {', '.join(unknown)}"
            )
        if len(self._extensions) >= MAX_EXTENSIONS:
            raise ExtensionError(403, "Extension.TooManyExtensions", "Too many extensions")
        identifier = str(uuid.uuid4())
        self._extensions[identifier] = RegisteredExtension(name, frozenset(events))
        self.notify()
        return identifier

    def get(self, identifier: str | None) -> RegisteredExtension:
        extension = self._extensions.get(identifier or "")
        if extension is None:
            raise ExtensionError(
                403, "Extension.UnknownExtensionIdentifier", "Unknown extension identifier"
            )
        return extension

    async def next_event(self, identifier: str | None) -> dict[str, Any]:
        extension = self.get(identifier)
        extension.is_waiting = True
        self.notify()
        try:
            return await extension.queue.get()
        finally:
            extension.is_waiting = False
            self.notify()

    def report_init_error(self, identifier: str | None, payload: bytes) -> None:
        self.get(identifier).has_failed = True
        self.init_error = payload
        self.notify()

    def report_exit_error(self, identifier: str | None) -> None:
        self.get(identifier).has_failed = True
        self.notify()

    def notify(self) -> None:
        self._changed.set()

    def all_waiting(self) -> bool:
        return all(ext.is_waiting or ext.has_failed for ext in self._extensions.values())

    async def wait_until(self, predicate: Any, timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def dispatch(self, event: dict[str, Any]) -> int:
        """Queue ``event`` for every extension subscribed to its type; returns how many."""
        delivered = 0
        for extension in self._extensions.values():
            if event["eventType"] in extension.events and not extension.has_failed:
                extension.queue.put_nowait(event)
                extension.is_waiting = False
                delivered += 1
        return delivered

    def shutdown_subscribers(self) -> int:
        return sum(1 for ext in self._extensions.values() if "SHUTDOWN" in ext.events)
