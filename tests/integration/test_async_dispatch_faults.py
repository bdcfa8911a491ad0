"""The async dispatcher outlives a store that fails its leases: it logs, backs off and, once
the store works again, runs what is queued."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
from faas_support import FaasServer, ServerFactory, create_function, lambda_client, wait_until

pytestmark = pytest.mark.timeout(60)

LEASE_FAILED = "leasing async events failed"

# Creates a file named after the event's id in WORK_DIR.
MARK = """
import os

def handler(event, context):
    open(os.path.join(os.environ["WORK_DIR"], event["id"]), "w").close()
"""


def _rename_events_table(server: FaasServer, old: str, new: str) -> None:
    """A real fault of the store under the running node: its queue table disappears."""
    path = server.data_dir / "registry.sqlite3"
    with contextlib.closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as conn:
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_dispatcher_survives_failing_leases(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server()
    client = lambda_client(server)
    create_function(client, "marks", MARK, Environment={"Variables": {"WORK_DIR": str(tmp_path)}})
    _rename_events_table(server, "events", "events_away")
    # The idle dispatcher leases again within its poll interval (1 s) and fails.
    wait_until(lambda: LEASE_FAILED in server.log_tail(200), 15, what="a failed lease logged")
    _rename_events_table(server, "events_away", "events")
    response = client.invoke(
        FunctionName="marks", InvocationType="Event", Payload=json.dumps({"id": "after"}).encode()
    )
    assert response["StatusCode"] == 202
    wait_until(
        lambda: (tmp_path / "after").exists(), 20, what="the event queued after the fault ran"
    )
    assert server.is_running
