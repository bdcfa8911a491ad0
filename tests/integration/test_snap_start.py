"""SnapStart through real boto3: a published version's environments are forked from an
initialized template, with before-snapshot and after-restore hooks."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from faas_support import (
    FaasServer,
    ServerFactory,
    create_function,
    invoke_json,
    lambda_client,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

# Init appends to a file (how many times module code ran); the hooks record themselves.
SNAPPY = """
import os
import random
import time
from pathlib import Path

from snapshot_restore_py import register_after_restore, register_before_snapshot

WORK = Path(os.environ["WORK_DIR"])
with open(WORK / "inits", "a") as inits:
    inits.write(f"{os.getpid()}\\n")
STATE = {"restored": False, "token": random.random()}

@register_before_snapshot
def before():
    with open(WORK / "snapshots", "a") as snapshots:
        snapshots.write(f"{os.getpid()}\\n")

@register_after_restore
def after():
    STATE["restored"] = True
    STATE["token"] = random.random()

def handler(event, context):
    time.sleep(event.get("seconds", 0))
    return {
        "pid": os.getpid(),
        "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
        "restored": STATE["restored"],
        "token": STATE["token"],
    }
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server()


def test_published_versions_start_from_the_template(server: FaasServer, tmp_path: Path) -> None:
    client = lambda_client(server)
    create_function(client, "snappy", SNAPPY, Timeout=30,
                    Environment={"Variables": {"WORK_DIR": str(tmp_path)}},
                    SnapStart={"ApplyOn": "PublishedVersions"})  # fmt: skip
    latest = client.get_function_configuration(FunctionName="snappy")
    assert latest["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    version = client.publish_version(FunctionName="snappy")["Version"]
    published = client.get_function_configuration(FunctionName="snappy", Qualifier=version)
    assert published["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}

    # The first environment starts the ordinary way; the template initializes beside it.
    first = invoke_json(client, "snappy", Qualifier=version)[1]
    assert first["init"] == "on-demand"
    wait_until(lambda: _lines(tmp_path / "snapshots"), 30, what="the before-snapshot hook")
    inits_before = len(_lines(tmp_path / "inits"))

    # Environments created from now on are restored copies: no Init, after-restore ran.
    results: list[dict[str, Any]] = []

    def call() -> None:
        results.append(invoke_json(lambda_client(server), "snappy", {"seconds": 1},
                                   Qualifier=version)[1])  # fmt: skip

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    restored = [result for result in results if result["init"] == "snap-start"]
    assert len(restored) >= 2, results
    assert all(result["restored"] for result in restored)
    assert len({result["token"] for result in restored}) == len(restored)  # reseeded each
    assert len({result["pid"] for result in results}) == 3
    assert len(_lines(tmp_path / "inits")) == inits_before  # module code did not run again
    assert len(_lines(tmp_path / "snapshots")) == 1

    # $LATEST never uses SnapStart.
    assert invoke_json(client, "snappy")[1]["init"] == "on-demand"


def test_invalid_snap_start_is_refused(server: FaasServer) -> None:
    client = lambda_client(server)
    with pytest.raises(client.exceptions.ClientError) as refused:
        create_function(client, "snappy-bad", SNAPPY, SnapStart={"ApplyOn": "Always"})
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "snapStart.applyOn" in refused.value.response["Error"]["Message"]
