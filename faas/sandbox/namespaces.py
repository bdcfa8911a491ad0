"""Per-environment isolation: a private /tmp, an unprivileged user, and Lambda's rlimits.

Design notes: where the node runs as root and util-linux's ``unshare`` works, each
environment gets its own mount namespace in which a fresh directory is bind-mounted
on ``/tmp``, then drops to an unprivileged user (``setpriv``) before the runtime
starts. Without that privilege, the environment still gets its own directory through
``TMPDIR`` (honoured by Python's ``tempfile`` and most tools). Either way the
directory is wiped when the environment shuts down. ``prlimit`` applies Lambda's
1,024 open files and caps any one file at the EphemeralStorage size.

The same isolation comes in two forms: ``prepare`` makes the directory and gives the argv
prefix that applies it all to an exec'd program; ``describe`` gives the same decisions as
data (``IsolationSpec``) for a process that applies them itself, such as a child forked by
the runtime's zygote (which makes the directory too).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LAMBDA_MAX_OPEN_FILES = 1024
_PROBE_TIMEOUT_S = 5.0
# Runs inside the new mount namespace: paths the environment needs that live under /tmp
# (code, interpreter, packages) are bound into the private directory first, then the
# private directory goes on /tmp, and the runtime starts.
_MOUNT_TMP = (
    'private=$1; opt=$2; shift 2; while [ "$1" != -- ]; do mkdir -p "$private${1#/tmp}" && '
    'mount --bind "$1" "$private${1#/tmp}" || exit 126; shift; done; shift; '
    'if [ "$opt" != - ]; then mount --bind "$opt" /opt && mount -o remount,bind,ro /opt '
    "|| exit 126; fi; "
    'mount --rbind "$private" /tmp || exit 126; exec "$@"'
)


class IsolationMode(enum.StrEnum):
    NAMESPACE = "namespace"  # private mount namespace with /tmp bind-mounted
    TMPDIR = "tmpdir"  # no privilege: a private directory through TMPDIR only


@dataclass(frozen=True, slots=True)
class IsolatedLaunch:
    """How to start one environment's processes isolated."""

    argv_prefix: tuple[str, ...]
    tmp_directory: Path
    env: dict[str, str]


@dataclass(frozen=True, slots=True)
class IsolationSpec:
    """One environment's isolation as data: what ``prepare``'s argv prefix would apply.

    Attributes:
        is_unshared: enter a private mount namespace with ``tmp_directory`` on /tmp
            (namespace mode); otherwise only ``env`` points TMPDIR at it (tmpdir mode).
        tmp_directory: the environment's private directory (``prepare`` makes it; a
            forked child makes it itself, owned by ``user_ids``, mode 0700).
        keep_paths: paths under the host's /tmp the environment needs, bound at the same
            place inside the private /tmp before it goes on /tmp.
        opt_directory: the merged layers, bound read-only on /opt (namespace mode only).
        user_ids: (uid, gid) to drop to, supplementary groups cleared; None keeps root.
        max_open_files: RLIMIT_NOFILE, soft and hard.
        max_file_bytes: RLIMIT_FSIZE, soft and hard: no file beyond EphemeralStorage.
        env: variables to add to the environment (TMPDIR).
    """

    is_unshared: bool
    tmp_directory: Path
    keep_paths: tuple[str, ...]
    opt_directory: str | None
    user_ids: tuple[int, int] | None
    max_open_files: int
    max_file_bytes: int
    env: dict[str, str]


class Isolation:
    """Decides, once at start-up, how environments are isolated on this machine."""

    __slots__ = ("_choosing", "_ids", "_keep", "_mode", "_root", "_run_as")

    def __init__(self, tmp_root: Path, run_as_user: str) -> None:
        self._root = tmp_root
        self._run_as = run_as_user
        # (uid, gid) to drop to, per runtime family whose files that user can reach.
        self._ids: dict[str, tuple[int, int]] = {}
        self._mode = IsolationMode.TMPDIR
        self._keep: list[str] = []  # needed paths under /tmp, re-bound inside the namespace
        self._choosing: asyncio.Task[None] | None = None  # the probes, until they are done

    @property
    def mode(self) -> IsolationMode:
        """How environments are isolated (known once ``ready`` has returned).

        Raises:
            RuntimeError: the probes that decide it still run.
        """
        if self._choosing is None or not self._choosing.done():
            raise RuntimeError("the isolation mode is not chosen yet: await ready() first")
        return self._mode

    def user_ids(self, family: str) -> tuple[int, int] | None:
        """(uid, gid) environments of a runtime family run as; None keeps the node's own."""
        return self._ids.get(family)

    async def start(self, needed_paths: dict[str, list[str]]) -> None:
        """Make the directory of the environments' /tmp directories and begin choosing the
        mode and, per runtime family, whether its environments drop to the unprivileged
        user (only if that user can reach every path the family needs). The choice takes
        probe processes, so it runs in the background: ``ready`` waits for it."""
        if self._choosing is not None:
            raise RuntimeError("isolation already started")
        every_path = [path for paths in needed_paths.values() for path in paths]
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
        self._keep = await asyncio.to_thread(_paths_under_tmp, every_path)
        await asyncio.to_thread(os.chmod, self._root, 0o711)
        self._choosing = asyncio.create_task(self._choose(needed_paths), name="isolation-probes")

    async def ready(self) -> None:
        """Wait until the mode is chosen (at once after the first time).

        Raises:
            RuntimeError: ``start`` was not called.
        """
        if self._choosing is None:
            raise RuntimeError("isolation not started")
        if not self._choosing.done():
            await asyncio.shield(self._choosing)

    async def _choose(self, needed_paths: dict[str, list[str]]) -> None:
        try:
            await self._probe(needed_paths)
        except Exception:  # task boundary: a probe that cannot run leaves the safe mode
            log.exception("cannot probe for namespaces: environments get a TMPDIR only")
            self._mode = IsolationMode.TMPDIR
            self._ids.clear()

    async def _probe(self, needed_paths: dict[str, list[str]]) -> None:
        if os.geteuid() == 0 and await self._namespaces_work():
            self._mode = IsolationMode.NAMESPACE
            if self._run_as:
                families = list(needed_paths)
                found = await asyncio.gather(
                    *(self._usable_ids(family, needed_paths[family]) for family in families)
                )
                self._ids.update(
                    (family, ids) for family, ids in zip(families, found, strict=True) if ids
                )
        log.info(
            "environment isolation: %s; as user %r: %s",
            self._mode.value,
            self._run_as,
            ", ".join(sorted(self._ids)) or "no runtime (all run as the node's user)",
        )

    async def stop(self) -> None:
        if self._choosing is not None and not self._choosing.done():
            self._choosing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._choosing
        await asyncio.to_thread(shutil.rmtree, self._root, True)

    async def _usable_ids(self, family: str, needed_paths: list[str]) -> tuple[int, int] | None:
        try:
            entry = pwd.getpwnam(self._run_as)
        except KeyError:
            log.warning("user %r does not exist: environments run as root", self._run_as)
            return None
        ids = (entry.pw_uid, entry.pw_gid)
        if not needed_paths:
            return ids
        # Readable, and searchable if a directory (a plain file needs no execute bit); one
        # probe for every path, which prints the first one the user cannot reach.
        probe = await _run_probe(
            "setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", "--",
            "/bin/sh", "-c",
            'for p; do test -r "$p" && { test ! -d "$p" || test -x "$p"; } '
            '|| { printf %s "$p"; exit 1; }; done',
            "faas-probe", *needed_paths,
        )  # fmt: skip
        if probe is None or probe.returncode != 0:
            unreachable = probe.stdout.decode(errors="replace") if probe else "the probe"
            log.warning(
                "%s environments run as the node's user: %s is not reachable by user %r",
                family, unreachable, self._run_as,
            )  # fmt: skip
            return None
        return ids

    async def _namespaces_work(self) -> bool:
        if not await asyncio.to_thread(_have_tools, ("unshare", "setpriv", "prlimit")):
            return False
        probe = await _run_probe("unshare", "--mount", "--propagation", "private", "--", "true")
        return probe is not None and probe.returncode == 0

    def describe(
        self, env_id: str, storage_mb: int, family: str, opt_path: str | None = None
    ) -> IsolationSpec:
        """How to isolate the environment, as data; its private /tmp is not made yet (a
        zygote's child makes it itself, as root, before it drops to the user).

        In a namespace, ``opt_path`` (the merged layers) is mounted read-only at /opt.
        """
        directory = self._root / env_id
        ids = self._ids.get(family)
        is_unshared = self.mode is IsolationMode.NAMESPACE
        return IsolationSpec(
            is_unshared=is_unshared,
            tmp_directory=directory,
            keep_paths=tuple(self._keep) if is_unshared else (),
            opt_directory=opt_path if is_unshared else None,
            user_ids=ids if is_unshared else None,
            max_open_files=LAMBDA_MAX_OPEN_FILES,
            max_file_bytes=storage_mb * 1024 * 1024,
            env={"TMPDIR": "/tmp" if is_unshared else str(directory)},
        )

    async def prepare(
        self, env_id: str, storage_mb: int, family: str, opt_path: str | None = None
    ) -> IsolatedLaunch:
        """Make the environment's private /tmp and the argv prefix that applies it all.

        In a namespace, ``opt_path`` (the merged layers) is mounted read-only at /opt.
        """
        await self.ready()
        spec = self.describe(env_id, storage_mb, family, opt_path)
        await asyncio.to_thread(_make_directory, spec.tmp_directory, spec.user_ids)
        limits = [
            "prlimit",
            f"--nofile={spec.max_open_files}:{spec.max_open_files}",
            f"--fsize={spec.max_file_bytes}",
            "--",
        ]
        if not spec.is_unshared:
            has_prlimit = shutil.which("prlimit") is not None
            return IsolatedLaunch(
                tuple(limits) if has_prlimit else (), spec.tmp_directory, spec.env
            )
        prefix = ["unshare", "--mount", "--propagation", "private", "--",
                  "/bin/sh", "-c", _MOUNT_TMP, "faas-isolate", str(spec.tmp_directory),
                  spec.opt_directory or "-", *spec.keep_paths, "--"]  # fmt: skip
        if spec.user_ids is not None:
            uid, gid = spec.user_ids
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        return IsolatedLaunch(tuple(prefix + limits), spec.tmp_directory, spec.env)

    async def release(self, env_id: str) -> None:
        """Wipe the environment's /tmp."""
        await asyncio.to_thread(shutil.rmtree, self._root / env_id, True)


def _have_tools(names: tuple[str, ...]) -> bool:
    """Blocking (a search of PATH): whether every one of ``names`` is installed."""
    return all(shutil.which(name) for name in names)


async def _run_probe(*argv: str) -> subprocess.CompletedProcess[bytes] | None:
    """Run a short probe program to its end (None if it cannot run or takes over 5 s).

    From a thread, where the interpreter starts it with vfork: the event loop's own way
    forks the whole node (its page tables copied) while the loop waits, at start-up when
    the first requests are being answered.
    """
    try:
        return await asyncio.to_thread(
            subprocess.run, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, timeout=_PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None


def _paths_under_tmp(paths: list[str]) -> list[str]:
    """The directories among (or holding) ``paths`` that a private /tmp would hide.

    Both the path as given and its resolved form count: a virtualenv's ``bin/python`` is a
    symlink, and the runtime is started by the name that lives under /tmp.
    """
    found = set()
    for path in paths:
        for candidate in {os.path.abspath(path), os.path.realpath(path)}:
            if not candidate.startswith("/tmp/") or not os.path.exists(candidate):
                continue
            found.add(candidate if os.path.isdir(candidate) else os.path.dirname(candidate))
    return sorted(found)


def _make_directory(directory: Path, ids: tuple[int, int] | None) -> None:
    directory.mkdir(mode=0o700, exist_ok=True)
    if ids is not None:
        os.chown(directory, *ids)
