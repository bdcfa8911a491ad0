"""Spawn-per-request baseline: a fresh interpreter runs one invocation and exits.

Run as ``python -S once.py CODE_DIR MODULE.FUNCTION`` with the event JSON on stdin;
prints the JSON result on stdout. Deliberately standalone (standard library only)
so it starts the way a naive runner's child would.
"""

from __future__ import annotations

import importlib
import json
import sys
from types import SimpleNamespace


def main(argv: list[str]) -> int:
    code_dir, handler_name = argv[1], argv[2]
    module_name, _, function_name = handler_name.rpartition(".")
    sys.path.insert(0, code_dir)
    handler = getattr(importlib.import_module(module_name), function_name)
    event = json.loads(sys.stdin.buffer.read() or b"{}")
    context = SimpleNamespace(aws_request_id="once", get_remaining_time_in_millis=lambda: 30000)
    sys.stdout.buffer.write(json.dumps(handler(event, context)).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
