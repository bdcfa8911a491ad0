"""The requests the node sends the zygote (PROTOCOL.md, "The zygote"), parsed into values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Any below: msgpack map values, checked and converted field by field.
Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class IsolationSpec:
    """What the exec path's wrapper chain (unshare, mount script, prlimit, setpriv) applies."""

    is_unshared: bool  # own mount namespace: private /tmp, layers on /opt
    tmp_directory: str | None  # made by the child (mode 0700, owned by uid/gid)
    keep_paths: tuple[str, ...]  # paths under the host's /tmp re-bound inside the private one
    opt_directory: str | None  # bound read-only on /opt (namespace mode only)
    uid: int | None
    gid: int | None
    max_open_files: int | None
    max_file_bytes: int | None

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> IsolationSpec:
        return cls(
            is_unshared=bool(frame.get("unshare")),
            tmp_directory=_optional_str(frame.get("tmp")),
            keep_paths=tuple(str(path) for path in frame.get("keep") or ()),
            opt_directory=_optional_str(frame.get("opt")),
            uid=_optional_int(frame.get("uid")),
            gid=_optional_int(frame.get("gid")),
            max_open_files=_optional_int(frame.get("nofile")),
            max_file_bytes=_optional_int(frame.get("fsize")),
        )


@dataclass(frozen=True, slots=True)
class ParkRequest:
    """`park`: fork a child that gets as far as it can before knowing its environment."""

    request_id: int
    cgroup_procs: tuple[str, ...]  # the spare cgroup it waits in
    is_unshared: bool  # enter its own mount namespace already (namespace mode)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ParkRequest:
        return cls(
            request_id=int(frame["id"]),
            cgroup_procs=tuple(str(path) for path in frame.get("cgroup_procs") or ()),
            is_unshared=bool(frame.get("unshare")),
        )


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """`spawn`: one environment, and the descriptors that came with it (name -> fd).

    With `parked_id`, a parked child becomes the environment; it is in its cgroup already.
    """

    request_id: int
    env: dict[str, str]
    cwd: str
    cgroup_procs: tuple[str, ...]
    isolation: IsolationSpec
    parked_id: int | None = None
    fds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any], fds: list[int]) -> SpawnRequest:
        """Parse a `spawn` frame; its `fds` names say which received descriptor is which.

        Raises:
            KeyError, TypeError, ValueError: a malformed frame.
        """
        names = [str(name) for name in frame["fds"]]
        if len(names) != len(fds) or not {"stdout", "stderr"} <= set(names):
            raise ValueError(f"spawn names descriptors {names} but {len(fds)} came")
        return cls(
            request_id=int(frame["id"]),
            env={str(key): str(value) for key, value in frame["env"].items()},
            cwd=str(frame["cwd"]),
            cgroup_procs=tuple(str(path) for path in frame.get("cgroup_procs") or ()),
            isolation=IsolationSpec.from_frame(frame.get("isolation") or {}),
            parked_id=_optional_int(frame.get("parked")),
            fds=dict(zip(names, fds, strict=True)),
        )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
