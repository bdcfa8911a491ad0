"""What /proc shows of a process whose argument and environment areas are rewritten in place."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import faas_python_runtime

ROOM_VAR = "_TEST_ENVIRON_ROOM"

CHILD = textwrap.dedent(
    f"""
    import json, os, sys
    from faas_python_runtime.proctitle import ProcessAreas

    def shown():
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read()
        with open("/proc/self/environ", "rb") as f:
            environ = f.read()
        return cmdline.decode(errors="replace"), environ.decode(errors="replace")

    areas = ProcessAreas.find({ROOM_VAR!r})
    before = shown()
    areas.touch()
    touched = shown()
    os.environ.clear()
    os.environ["GREETING"] = "hello"
    areas.rewrite(["python", "-S", "-m", "faas_python_runtime"], {{"GREETING": "hello"}})
    after = shown()
    print(json.dumps({{"before": before, "touched": touched, "after": after}}))
    """
)


def test_touch_changes_nothing_shown_and_rewrite_shows_the_new_title_and_environment() -> None:
    package_root = str(Path(faas_python_runtime.__file__).parents[1])
    env = {ROOM_VAR: "x" * 4096, "PYTHONPATH": package_root}  # the room first, as the zygote's
    result = subprocess.run(
        [sys.executable, "-S", "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    shown = json.loads(result.stdout)
    assert shown["touched"] == shown["before"]
    assert ROOM_VAR in shown["before"][1]
    cmdline, environ = shown["after"]
    assert cmdline.rstrip(" \0") == "python -S -m faas_python_runtime"
    entries = [entry for entry in environ.split("\0") if entry]
    assert entries[0] == "GREETING=hello"  # in the room; what followed it stays after
    assert not any(entry.startswith(ROOM_VAR) for entry in entries)
