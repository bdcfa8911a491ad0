"""What /proc shows of a forked environment: the command line and environment an exec'd one has.

Design notes: a fork keeps the zygote's argument and environment areas, the memory that
/proc/<pid>/cmdline and /proc/<pid>/environ read. Left alone, every environment would look like
`python -S -m faas_python_runtime.zygote` with the zygote's environment, and tools that find
environments by command line or by AWS_LAMBDA_FUNCTION_NAME (ps, psutil, the bench) would miss
them. Moving the areas needs CAP_SYS_RESOURCE (prctl PR_SET_MM), which containers usually drop,
so they are rewritten in place instead: the command line as one title of space-separated words,
as setproctitle(3) does (the kernel then reads it up to its NUL, and psutil splits it on
spaces), and the environment into the room the zygote reserved as the first variable of its
own environment area. Once the child has replaced its environment, nothing points into that
room any more. Best effort: if the areas are not laid out as expected, nothing is written.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Fields of /proc/<pid>/stat (1-based): the argument and environment areas (Linux 3.5+).
_ARG_START_FIELD = 48
_ENV_END_FIELD = 51


def _stat_fields(first: int, last: int) -> list[int]:
    with open("/proc/self/stat", "rb") as stat:
        text = stat.read()
    # Fields after the command name (in parentheses, may hold anything) start at field 3.
    rest = text[text.rindex(b")") + 2 :].split()
    return [int(value) for value in rest[first - 3 : last - 2]]


@dataclass(frozen=True, slots=True)
class ProcessAreas:
    """Where this process's command line is, and the room reserved in its environment area."""

    arg_start: int
    arg_end: int
    env_start: int
    env_room: int

    @classmethod
    def find(cls, room_variable: str) -> ProcessAreas | None:
        """The areas, if the environment area starts with ``room_variable`` (the filler the
        zygote was started with) right after the command line; None otherwise."""
        try:
            value = os.environb[os.fsencode(room_variable)]
            arg_start, arg_end, env_start, _ = _stat_fields(_ARG_START_FIELD, _ENV_END_FIELD)
        except (KeyError, OSError, ValueError):
            return None
        entry = os.fsencode(room_variable) + b"=" + value
        if env_start != arg_end or arg_end <= arg_start:
            return None
        if ctypes.string_at(env_start, len(entry) + 1) != entry + b"\0":
            return None
        return cls(arg_start, arg_end, env_start, len(entry) + 1)

    def touch(self) -> None:
        """Write both areas back unchanged: a forked child takes their copy-on-write faults
        now (a parked one, while it waits) rather than in ``rewrite``, during a cold start."""
        for start, size in ((self.arg_start, self.arg_end - self.arg_start),
                            (self.env_start, self.env_room)):  # fmt: skip
            ctypes.memmove(start, ctypes.string_at(start, size), size)

    def rewrite(self, argv: Sequence[str], environ: Mapping[str, str]) -> None:
        """Show ``argv`` and ``environ``; call only after the environment was replaced."""
        title = " ".join(argv).encode("utf-8", "surrogateescape")
        size = self.arg_end - self.arg_start
        if 0 < len(title) <= size - 2:
            # The area's last byte must not be NUL: that tells the kernel it holds a title.
            ctypes.memmove(self.arg_start, title + b"\0" + b" " * (size - len(title) - 1), size)
        block = b"".join(
            os.fsencode(name) + b"=" + os.fsencode(value) + b"\0" for name, value in environ.items()
        )
        if len(block) < self.env_room:
            ctypes.memmove(self.env_start, block.ljust(self.env_room, b"\0"), self.env_room)
        else:
            ctypes.memset(self.env_start, 0, self.env_room)  # too big to show: show none
