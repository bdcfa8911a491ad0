"""Blocking reads and writes of cgroupfs: find the hierarchies, read stats, kill members.

Design notes: every function here blocks (cgroupfs is a kernel filesystem, so each call is
short) and is meant to run through ``asyncio.to_thread``; nothing here keeps state. Killing
is by pidfd where the kernel has it: a pid read from ``cgroup.procs`` is opened, checked to
still be inside the cgroup, and only then signalled, so a pid reused by an unrelated process
in between can never be hit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# The v1 controllers we use; memory and cpu are required, pids is used when mounted.
V1_REQUIRED = ("memory", "cpu")
V1_OPTIONAL = ("pids",)
V2_REQUIRED = ("memory", "cpu")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    """One cgroup filesystem mount from mountinfo.

    Attributes:
        root: the directory of the hierarchy that is mounted (``/`` unless in a container).
        mount_point: where it is mounted.
        fstype: ``cgroup`` (v1) or ``cgroup2``.
        options: the superblock options; for v1 these name the controllers.
    """

    root: str
    mount_point: str
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts listed in a ``/proc/<pid>/mountinfo`` text."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fstype,
                options=frozenset(fields[sep + 3].split(",")),
            )
        )
    return mounts


def read_mounts() -> list[Mount]:
    """The cgroup mounts this process sees."""
    return parse_mountinfo(MOUNTINFO.read_text())


def _is_writable(path: str) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def find_v2(mounts: Iterable[Mount]) -> tuple[Mount | None, str]:
    """The cgroup2 mount if memory and cpu can be used in it, else None and why not."""
    reason = "no cgroup2 mount"
    for mount in mounts:
        if mount.fstype != "cgroup2":
            continue
        base = Path(mount.mount_point)
        try:
            available = set((base / "cgroup.controllers").read_text().split())
            enabled = set((base / "cgroup.subtree_control").read_text().split())
        except OSError as exc:
            reason = f"{base}: {exc.strerror}"
            continue
        missing = [c for c in V2_REQUIRED if c not in available or c not in enabled]
        if missing:
            # Enabling them at the top would change cgroups that are not ours.
            reason = f"{base}: controllers {', '.join(missing)} not enabled"
        elif not _is_writable(mount.mount_point):
            reason = f"{base}: not writable"
        else:
            return mount, ""
    return None, reason


def find_v1(mounts: Iterable[Mount]) -> tuple[dict[str, Mount] | None, str]:
    """Controller name -> v1 mount, if memory and cpu are mounted and writable."""
    found: dict[str, Mount] = {}
    for mount in mounts:
        if mount.fstype != "cgroup":
            continue
        for controller in (*V1_REQUIRED, *V1_OPTIONAL):
            if controller in mount.options and controller not in found:
                found[controller] = mount
    missing = [c for c in V1_REQUIRED if c not in found]
    if missing:
        return None, f"v1 controllers {', '.join(missing)} not mounted"
    for controller, mount in list(found.items()):
        if not _is_writable(mount.mount_point):
            if controller in V1_REQUIRED:
                return None, f"{mount.mount_point}: not writable"
            del found[controller]
    return found, ""


def write_text(path: Path, value: str) -> None:
    """Write one value to a cgroup control file (one write call, as the kernel wants)."""
    with open(path, "w") as file:
        file.write(value)


def write_if_present(path: Path, value: str) -> bool:
    """Write ``value`` if the file exists and accepts it; False if it cannot be set."""
    try:
        write_text(path, value)
    except OSError:
        return False
    return True


def read_text(path: Path) -> str:
    """The content of a cgroup file."""
    return path.read_text()


def read_int(path: Path) -> int:
    """A cgroup file holding one integer."""
    return int(path.read_text().strip())


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``memory.events``, ``memory.oom_control``) as a dict."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def read_pids(procs_files: Iterable[Path]) -> set[int]:
    """Every pid listed in any of ``procs_files`` (a missing file counts as empty)."""
    pids: set[int] = set()
    for path in procs_files:
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(line) for line in path.read_text().split())
    return pids


def cgroup_path_of(pid: int, controller: str | None) -> str | None:
    """The cgroup of ``pid`` in the v1 hierarchy holding ``controller`` (None: the v2 one)."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",") if controllers else []
        if (controller is None and not names) or (controller is not None and controller in names):
            return path
    return None


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may contain anything.
    return stat[stat.rindex(")") + 2] not in "ZX"


def kill_members(pids: Iterable[int], controller: str | None, cgroup_path: str) -> int:
    """SIGKILL each pid that is (still) in ``cgroup_path``; returns how many were signalled."""
    killed = 0
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            pidfd = -1  # no pidfds on this kernel: a plain kill after the check below
        try:
            if cgroup_path_of(pid, controller) != cgroup_path:
                continue
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
        finally:
            if pidfd >= 0:
                os.close(pidfd)
    return killed


def make_dir(path: Path) -> bool:
    """Create one cgroup directory; False if it was there already."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    return True


def remove_dir(path: Path) -> bool:
    """Remove one cgroup directory; True once it is gone, False while it is busy."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True
