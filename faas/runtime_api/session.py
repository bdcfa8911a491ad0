"""One environment's side of the Runtime API: HTTP calls in, transport frames out.

Design notes: the node hands an invocation to the session with ``send(invoke
frame)``; the runtime's long-polling ``/next`` takes it. The runtime's posts
(``response``, ``error``, ``init/error``) become frames in the inbox the
Environment reads, exactly like the native runtime's frames, so both doors share
one state machine. A request id is answerable once: any later post for it, or a
post for an id that is not the current one, is refused (400, as Lambda does).
"""

from __future__ import annotations

import asyncio
import enum

from faas.pool.channel import Frame
from faas.pool.transport import FrameInbox
from faas.runtime_api.extensions import ExtensionHub


class SessionPhase(enum.Enum):
    INIT = "init"  # the runtime has not yet asked for its first invocation
    READY = "ready"  # waiting for (or running) invocations
    CLOSED = "closed"  # the environment is gone


class RuntimeSession:
    """Runtime API state of one environment; also the environment's transport."""

    __slots__ = (
        "_current_id",
        "_inbox",
        "_next_invoke",
        "_phase",
        "extensions",
        "function_info",
        "max_response_bytes",
    )

    def __init__(self, max_response_bytes: int, function_info: dict[str, str]) -> None:
        # What /register answers: functionName, functionVersion, handler.
        self.function_info = function_info
        self.extensions = ExtensionHub()
        self._inbox = FrameInbox()
        self._phase = SessionPhase.INIT
        self._next_invoke: asyncio.Queue[Frame] = asyncio.Queue(maxsize=1)
        self._current_id: str | None = None
        self.max_response_bytes = max_response_bytes

    @property
    def inbox(self) -> FrameInbox:
        return self._inbox

    @property
    def phase(self) -> SessionPhase:
        return self._phase

    # Environment side (the transport protocol)

    def send(self, frame: Frame) -> None:
        if self._phase is SessionPhase.CLOSED:
            raise ConnectionResetError("runtime session is closed")
        if frame.get("t") == "invoke":
            self._next_invoke.put_nowait(frame)
        # `shutdown` has no Runtime API message: the environment signals the process.

    def close(self) -> None:
        self._phase = SessionPhase.CLOSED
        self._inbox.close()
        if self._next_invoke.empty():
            self._next_invoke.put_nowait({"t": "closed"})

    # Runtime side (called by the HTTP handlers)

    async def next_invocation(self) -> Frame | None:
        """The next invocation for ``/next``; None once the environment is gone."""
        if self._phase is SessionPhase.INIT:
            self._phase = SessionPhase.READY
            self._inbox.put({"t": "ready"})
        frame = await self._next_invoke.get()
        if frame.get("t") != "invoke":
            self._next_invoke.put_nowait(frame)  # keep other pollers from hanging
            return None
        self._current_id = str(frame["id"])
        return frame

    def is_current(self, request_id: str) -> bool:
        return self._current_id is not None and self._current_id == request_id

    def post_response(self, request_id: str, payload: bytes) -> None:
        self._current_id = None
        self._inbox.put({"t": "result", "id": request_id, "payload": payload, "max_rss_kb": 0})

    def post_error(self, request_id: str, payload: bytes, error_type: str) -> None:
        self._current_id = None
        self._inbox.put(
            {"t": "error", "id": request_id, "payload": payload, "error_type": error_type,
             "max_rss_kb": 0}
        )  # fmt: skip

    def post_init_error(self, payload: bytes) -> bool:
        """Record an Init failure; False if Init is already over (the caller answers 403)."""
        if self._phase is not SessionPhase.INIT:
            return False
        self._inbox.put({"t": "init_error", "payload": payload})
        return True
