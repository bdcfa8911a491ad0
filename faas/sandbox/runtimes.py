"""Which runtimes this node can run, and the command that starts each.

Every python3.x Runtime value runs on the host interpreter (the one running faas);
nodejs runtimes run on the machine's ``node``; ``provided*`` run the function's own
executable ``bootstrap``.
"""

from __future__ import annotations

import shutil

NATIVE_PYTHON_RUNTIMES = frozenset(
    {"python3.9", "python3.10", "python3.11", "python3.12", "python3.13"}
)
NODEJS_RUNTIMES = frozenset({"nodejs18.x", "nodejs20.x", "nodejs22.x"})
PROVIDED_RUNTIMES = frozenset({"provided", "provided.al2", "provided.al2023"})


def node_executable() -> str | None:
    """The machine's Node.js, if there is one."""
    return shutil.which("node")


def supported_runtimes() -> frozenset[str]:
    """Runtime values CreateFunction accepts on this machine."""
    runtimes = NATIVE_PYTHON_RUNTIMES | PROVIDED_RUNTIMES
    if node_executable() is not None:
        runtimes |= NODEJS_RUNTIMES
    return runtimes
