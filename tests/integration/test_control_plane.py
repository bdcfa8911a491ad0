"""Control plane through real boto3 and the AWS CLI: create, get, list, update, delete."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from faas_support import (
    ACCOUNT_ID,
    ARN_PREFIX,
    REGION,
    ROLE,
    FaasServer,
    ServerFactory,
    capture_process,
    code_sha256,
    create_function,
    invoke_json,
    lambda_client,
    make_zip,
    process_is_gone,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

VERSIONED = """
def handler(event, context):
    return {{"version": {version}, "event": event}}
"""

SETTINGS_PROBE = """
import os

def handler(event, context):
    return {
        "greeting": os.environ.get("GREETING"),
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "memory_env": os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"],
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
"""

PID = """
import os

def handler(event, context):
    return {"pid": os.getpid()}
"""

LAST_MODIFIED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server()


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


def test_create_invoke_update_code_invoke(client: Any) -> None:
    name = "cp-update"
    created = create_function(client, name, VERSIONED.format(version=1))
    client.get_waiter("function_active_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    response, payload = invoke_json(client, name, {"n": 1})
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert payload == {"version": 1, "event": {"n": 1}}

    new_zip = make_zip({"app.py": VERSIONED.format(version=2)})
    updated = client.update_function_code(FunctionName=name, ZipFile=new_zip)
    client.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    assert updated["CodeSha256"] == code_sha256(new_zip)
    assert updated["CodeSha256"] != created["CodeSha256"]
    assert updated["RevisionId"] != created["RevisionId"]

    _, payload = invoke_json(client, name, {"n": 2})
    assert payload == {"version": 2, "event": {"n": 2}}


def test_function_configuration_fields(client: Any) -> None:
    name = "cp-fields"
    zip_bytes = make_zip({"app.py": VERSIONED.format(version=1)})
    created = client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_bytes},
        Description="field check",
        Tags={"team": "faas"},
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    configuration = client.get_function_configuration(FunctionName=name)
    function = client.get_function(FunctionName=name)
    for config in (created, configuration, function["Configuration"]):
        assert config["FunctionName"] == name
        assert config["FunctionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        assert config["Runtime"] == "python3.12"
        assert config["Role"] == ROLE
        assert config["Handler"] == "app.handler"
        assert config["Description"] == "field check"
        assert config["CodeSha256"] == code_sha256(zip_bytes)
        assert config["CodeSize"] == len(zip_bytes)
        assert config["Version"] == "$LATEST"
        assert config["State"] == "Active"
        assert config["LastUpdateStatus"] == "Successful"
        assert config["PackageType"] == "Zip"
        assert config["Timeout"] == 3
        assert config["MemorySize"] == 128
        assert LAST_MODIFIED.fullmatch(config["LastModified"]), config["LastModified"]
        assert UUID.fullmatch(config["RevisionId"]), config["RevisionId"]
        assert config["RevisionId"] == created["RevisionId"]
    assert function["Tags"] == {"team": "faas"}
    assert function["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(function["Code"]["Location"], timeout=10) as download:
        assert download.read() == zip_bytes


def test_revision_id_changes_on_every_update(client: Any) -> None:
    name = "cp-revisions"
    revisions = [create_function(client, name, VERSIONED.format(version=1))["RevisionId"]]
    assert client.get_function(FunctionName=name)["Configuration"]["RevisionId"] == revisions[0]
    revisions.append(
        client.update_function_configuration(FunctionName=name, Description="a")["RevisionId"]
    )
    revisions.append(
        client.update_function_code(
            FunctionName=name, ZipFile=make_zip({"app.py": VERSIONED.format(version=2)})
        )["RevisionId"]
    )
    revisions.append(
        client.update_function_configuration(FunctionName=name, Description="b")["RevisionId"]
    )
    assert len(set(revisions)) == len(revisions)
    assert client.get_function_configuration(FunctionName=name)["RevisionId"] == revisions[-1]


def test_update_configuration_takes_effect_on_next_invoke(client: Any) -> None:
    name = "cp-settings"
    create_function(client, name, SETTINGS_PROBE)
    _, before = invoke_json(client, name)
    assert before["greeting"] is None
    assert before["memory_limit_in_mb"] == "128"
    assert 0 < before["remaining_ms"] <= 3000

    updated = client.update_function_configuration(
        FunctionName=name,
        Timeout=10,
        MemorySize=256,
        Environment={"Variables": {"GREETING": "hello"}},
        Description="retuned",
    )
    assert updated["Timeout"] == 10
    assert updated["MemorySize"] == 256
    assert updated["Environment"] == {"Variables": {"GREETING": "hello"}}
    assert updated["Description"] == "retuned"
    client.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )

    _, after = invoke_json(client, name)
    assert after["greeting"] == "hello"
    assert after["memory_limit_in_mb"] == "256"
    assert after["memory_env"] == "256"
    assert 3000 < after["remaining_ms"] <= 10000
    config = client.get_function_configuration(FunctionName=name)
    assert (config["Timeout"], config["MemorySize"], config["Description"]) == (10, 256, "retuned")
    assert config["Environment"]["Variables"] == {"GREETING": "hello"}

    client.update_function_configuration(FunctionName=name, Environment={"Variables": {}})
    _, cleared = invoke_json(client, name)
    assert cleared["greeting"] is None


def test_stale_revision_id_is_refused(client: Any) -> None:
    name = "cp-stale"
    stale = create_function(client, name, VERSIONED.format(version=1))["RevisionId"]
    current = client.update_function_configuration(FunctionName=name, Description="first")
    with pytest.raises(client.exceptions.PreconditionFailedException):
        client.update_function_configuration(
            FunctionName=name, Description="second", RevisionId=stale
        )
    with pytest.raises(client.exceptions.PreconditionFailedException):
        client.update_function_code(
            FunctionName=name,
            ZipFile=make_zip({"app.py": VERSIONED.format(version=2)}),
            RevisionId=stale,
        )
    config = client.get_function_configuration(FunctionName=name)
    assert config["Description"] == "first"
    assert config["RevisionId"] == current["RevisionId"]
    _, payload = invoke_json(client, name)
    assert payload["version"] == 1

    accepted = client.update_function_configuration(
        FunctionName=name, Description="second", RevisionId=current["RevisionId"]
    )
    assert accepted["Description"] == "second"


@pytest.mark.parametrize(
    "form",
    ["name", "name:$LATEST", "partial-arn", "arn", "arn:$LATEST"],
)
def test_function_name_forms(client: Any, form: str) -> None:
    name = "cp-names"
    try:
        create_function(client, name, VERSIONED.format(version=7))
    except client.exceptions.ResourceConflictException:
        pass  # created by an earlier parameter
    reference = {
        "name": name,
        "name:$LATEST": f"{name}:$LATEST",
        "partial-arn": f"{ACCOUNT_ID}:function:{name}",
        "arn": f"{ARN_PREFIX}{name}",
        "arn:$LATEST": f"{ARN_PREFIX}{name}:$LATEST",
    }[form]
    assert client.get_function(FunctionName=reference)["Configuration"]["FunctionName"] == name
    assert client.get_function_configuration(FunctionName=reference)["FunctionName"] == name
    response, payload = invoke_json(client, reference, {"form": form})
    assert payload == {"version": 7, "event": {"form": form}}
    assert response["ExecutedVersion"] == "$LATEST"


def test_delete_function(client: Any) -> None:
    name = "cp-delete"
    create_function(client, name, VERSIONED.format(version=1))
    invoke_json(client, name)
    response = client.delete_function(FunctionName=name)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=name)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_configuration(FunctionName=name)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=name, Payload=b"{}")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_function(FunctionName=name)
    assert name not in {f["FunctionName"] for f in client.list_functions()["Functions"]}
    create_function(client, name, VERSIONED.format(version=2))
    assert invoke_json(client, name)[1]["version"] == 2


def test_delete_by_arn(client: Any) -> None:
    name = "cp-delete-arn"
    create_function(client, name, VERSIONED.format(version=1))
    client.delete_function(FunctionName=f"{ARN_PREFIX}{name}")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=name)


def test_get_account_settings(client: Any) -> None:
    create_function(client, "cp-account", VERSIONED.format(version=1))
    settings = client.get_account_settings()
    limit, usage = settings["AccountLimit"], settings["AccountUsage"]
    assert set(limit) >= {
        "TotalCodeSize",
        "CodeSizeUnzipped",
        "CodeSizeZipped",
        "ConcurrentExecutions",
        "UnreservedConcurrentExecutions",
    }
    assert limit["CodeSizeZipped"] == 50 * 1024 * 1024
    assert limit["CodeSizeUnzipped"] == 250 * 1024 * 1024
    assert limit["ConcurrentExecutions"] == 1000
    assert 0 < limit["UnreservedConcurrentExecutions"] <= limit["ConcurrentExecutions"]
    functions = list_all(client)
    assert usage["FunctionCount"] == len(functions)
    assert usage["TotalCodeSize"] == sum(f["CodeSize"] for f in functions)


def list_all(client: Any) -> list[dict[str, Any]]:
    functions: list[dict[str, Any]] = []
    for page in client.get_paginator("list_functions").paginate():
        functions.extend(page["Functions"])
    return functions


def test_list_functions_pages(make_server: ServerFactory) -> None:
    client = lambda_client(make_server())
    names = [f"page-{index}" for index in range(7)]
    for name in reversed(names):
        create_function(client, name, VERSIONED.format(version=1))

    seen: list[str] = []
    sizes = []
    marker = None
    for _ in range(10):
        kwargs: dict[str, Any] = {"MaxItems": 3}
        if marker is not None:
            kwargs["Marker"] = marker
        page = client.list_functions(**kwargs)
        sizes.append(len(page["Functions"]))
        seen.extend(f["FunctionName"] for f in page["Functions"])
        marker = page.get("NextMarker")
        if marker is None:
            break
    assert sizes == [3, 3, 1]
    assert sorted(seen) == names
    assert len(seen) == len(set(seen))

    pages = list(client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["Functions"]) for p in pages] == [3, 3, 1]
    assert "NextMarker" not in pages[-1]
    assert all("NextMarker" in p for p in pages[:-1])
    assert sorted(f["FunctionName"] for p in pages for f in p["Functions"]) == names

    first_five = (
        client.get_paginator("list_functions")
        .paginate(PaginationConfig={"MaxItems": 5, "PageSize": 2})
        .build_full_result()
    )
    assert len(first_five["Functions"]) == 5
    assert "NextToken" in first_five

    everything = client.list_functions()
    assert sorted(f["FunctionName"] for f in everything["Functions"]) == names
    assert "NextMarker" not in everything


def test_aws_cli_invoke(server: FaasServer, client: Any, tmp_path: Path) -> None:
    create_function(client, "hello", VERSIONED.format(version=3))
    out_file = tmp_path / "out.json"
    aws = str(Path(sys.executable).parent / "aws")
    config_file = tmp_path / "aws-config"
    # v1 of the CLI has no --cli-binary-format flag; raw-in-base64-out is its default and
    # can be spelled as this config value, which v2 honours as well.
    config_file.write_text("[default]\ncli_binary_format = raw-in-base64-out\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(config_file),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_MAX_ATTEMPTS": "1",
    }
    version = subprocess.run(
        [aws, "--version"], env=env, capture_output=True, text=True, timeout=60
    )
    binary_format = (
        ["--cli-binary-format", "raw-in-base64-out"]
        if (version.stdout + version.stderr).startswith("aws-cli/2")
        else []
    )
    completed = subprocess.run(
        [
            aws,
            "lambda",
            "invoke",
            "--endpoint-url",
            server.url,
            "--function-name",
            "hello",
            "--payload",
            '{"name": "cli"}',
            *binary_format,
            str(out_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["StatusCode"] == 200
    assert summary["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in summary
    assert json.loads(out_file.read_text()) == {"version": 3, "event": {"name": "cli"}}


def test_concurrent_creates_of_one_name(server: FaasServer) -> None:
    clients = [lambda_client(server) for _ in range(8)]

    def create(index: int) -> str:
        try:
            create_function(clients[index], "cp-race", VERSIONED.format(version=index))
        except clients[index].exceptions.ResourceConflictException:
            return "conflict"
        return f"created {index}"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, range(8)))
    created = [outcome for outcome in outcomes if outcome.startswith("created")]
    assert len(created) == 1, outcomes
    assert outcomes.count("conflict") == 7
    winner = int(created[0].split()[1])
    assert invoke_json(clients[0], "cp-race")[1]["version"] == winner


def test_concurrent_updates_with_one_revision(server: FaasServer, client: Any) -> None:
    revision = create_function(client, "cp-cas", VERSIONED.format(version=0))["RevisionId"]
    clients = [lambda_client(server) for _ in range(8)]

    def update(index: int) -> str:
        try:
            clients[index].update_function_configuration(
                FunctionName="cp-cas", Description=f"writer {index}", RevisionId=revision
            )
        except clients[index].exceptions.PreconditionFailedException:
            return "stale"
        return f"writer {index}"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(update, range(8)))
    winners = [outcome for outcome in outcomes if outcome != "stale"]
    assert len(winners) == 1, outcomes
    assert client.get_function_configuration(FunctionName="cp-cas")["Description"] == winners[0]


def test_update_code_dry_run_changes_nothing(client: Any) -> None:
    name = "cp-dry-run"
    created = create_function(client, name, VERSIONED.format(version=1))
    response = client.update_function_code(
        FunctionName=name, ZipFile=make_zip({"app.py": VERSIONED.format(version=2)}), DryRun=True
    )
    assert response["CodeSha256"] == created["CodeSha256"]
    config = client.get_function_configuration(FunctionName=name)
    assert (config["CodeSha256"], config["RevisionId"]) == (
        created["CodeSha256"],
        created["RevisionId"],
    )
    assert invoke_json(client, name)[1]["version"] == 1


def test_delete_stops_the_functions_environments(client: Any) -> None:
    name = "cp-delete-env"
    create_function(client, name, PID)
    environment = capture_process(invoke_json(client, name)[1]["pid"])
    client.delete_function(FunctionName=name)
    wait_until(lambda: process_is_gone(environment), 10, what="the deleted function's environment")


@pytest.mark.parametrize(
    "reference",
    [
        "arn:aws:lambda:eu-west-1:000000000000:function:cp-foreign",
        "arn:aws:lambda:us-east-1:123456789012:function:cp-foreign",
        "123456789012:function:cp-foreign",
    ],
    ids=["other-region", "other-account", "other-account-partial"],
)
def test_foreign_arn_does_not_resolve(client: Any, reference: str) -> None:
    try:
        create_function(client, "cp-foreign", VERSIONED.format(version=1))
    except client.exceptions.ResourceConflictException:
        pass  # created by an earlier parameter
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=reference)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=reference, Payload=b"{}")


def test_the_callers_access_key_is_recorded(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    create_function(client, "audited", "def handler(e, c):\n    return 1\n")
    client.delete_function(FunctionName="audited")
    wait_until(
        lambda: "DeleteFunction audited by test" in server.log_tail(200),
        5,
        what="the audit line naming the caller",
    )
    assert "CreateFunction audited by test" in server.log_tail(200)
