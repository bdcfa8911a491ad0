"""SnapStart runtime hooks, under the names of AWS's snapshot-restore-py library.

A handler module registers functions (with their arguments) to run in the template just
before it is snapshotted, and in each environment restored from it, before its first
invoke::

    from snapshot_restore_py import register_after_restore, register_before_snapshot

    @register_before_snapshot
    def close_connections(): ...

    register_after_restore(reconnect, "db", timeout=3)

Before-snapshot functions run in the reverse order of their registration, after-restore
ones in order, as on Lambda. A copy of this module bundled with the function's code is
used instead of this one, exactly as the runtime would find it (by name, on sys.path).

Design notes: the registries are module-level lists because the library's API is a pair
of module functions that user code calls while it is imported; one process holds one
function's hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

# Any: a hook takes whatever arguments it was registered with.
Hook = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
F = TypeVar("F", bound=Callable[..., Any])

_before_snapshot: list[Hook] = []
_after_restore: list[Hook] = []


def register_before_snapshot(func: F, *args: Any, **kwargs: Any) -> F:
    """Run ``func(*args, **kwargs)`` before the snapshot is taken; usable as a decorator."""
    _before_snapshot.append((func, args, kwargs))
    return func


def register_after_restore(func: F, *args: Any, **kwargs: Any) -> F:
    """Run ``func(*args, **kwargs)`` after each restore; usable as a decorator."""
    _after_restore.append((func, args, kwargs))
    return func


def get_before_snapshot() -> list[Hook]:
    """The before-snapshot hooks, in registration order."""
    return _before_snapshot


def get_after_restore() -> list[Hook]:
    """The after-restore hooks, in registration order."""
    return _after_restore
