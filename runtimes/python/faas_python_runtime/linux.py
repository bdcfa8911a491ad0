"""Linux calls the standard library of Python 3.11 lacks (unshare, mount, prctl), via ctypes.

Design notes: libc is loaded once by whoever needs it (the zygote, before it forks) and
handed down, so a forked environment pays no `dlopen` on its start. Every call raises
`OSError` with the C errno, like the `os` functions it stands beside.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


class Libc:
    """The few libc entry points a zygote and its children call."""

    __slots__ = ("_libc",)

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare.argtypes = [ctypes.c_int]
        libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_void_p,
        ]
        libc.prctl.argtypes = [
            ctypes.c_int,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
        ]
        self._libc = libc

    @staticmethod
    def _check(result: int, what: str) -> None:
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def unshare(self, flags: int) -> None:
        """unshare(2): leave the namespaces named by ``flags`` (e.g. `CLONE_NEWNS`)."""
        self._check(self._libc.unshare(flags), "unshare")

    def mount(self, source: str | None, target: str, flags: int, fstype: str | None = None) -> None:
        """mount(2) without filesystem data (binds, remounts and propagation changes)."""
        self._check(
            self._libc.mount(
                source.encode() if source is not None else None,
                target.encode(),
                fstype.encode() if fstype is not None else None,
                flags,
                None,
            ),
            f"mount {source or 'none'} on {target}",
        )

    def set_parent_death_signal(self, signum: int) -> None:
        """prctl(PR_SET_PDEATHSIG): get ``signum`` when the thread that forked us ends."""
        self._check(self._libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl")

    def set_dumpable(self, is_dumpable: bool) -> None:
        """prctl(PR_SET_DUMPABLE): whether our /proc files belong to us (and cores are kept)."""
        self._check(self._libc.prctl(PR_SET_DUMPABLE, int(is_dumpable), 0, 0, 0), "prctl")
