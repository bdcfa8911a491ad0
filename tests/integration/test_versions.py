"""Published versions through real boto3: PublishVersion, ListVersionsByFunction, qualifiers on
Get/Invoke/Delete, immutability, per-version environments, and surviving a restart."""

from __future__ import annotations

import itertools
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from faas_support import (
    ACCOUNT_ID,
    ARN_PREFIX,
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

# Reports which code ran (TAG), in which environment, as which version, invoked by which ARN.
PROBE = """
import os

TAG = "@TAG@"

def handler(event, context):
    return {
        "tag": TAG,
        "pid": os.getpid(),
        "env_version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "function_version": context.function_version,
        "invoked_arn": context.invoked_function_arn,
        "greeting": os.environ.get("GREETING"),
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
"""

_names = itertools.count()


def probe(tag: str) -> str:
    return PROBE.replace("@TAG@", tag)


def probe_zip(tag: str) -> bytes:
    return make_zip({"app.py": probe(tag)})


def new_name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def version_numbers(client: Any, name: str) -> list[str]:
    versions: list[str] = []
    for page in client.get_paginator("list_versions_by_function").paginate(FunctionName=name):
        versions.extend(config["Version"] for config in page["Versions"])
    return versions


def with_versions(client: Any, name: str, tags: list[str]) -> list[dict[str, Any]]:
    """Create ``name`` with code ``tags[0]`` and publish one version per tag, in order."""
    create_function(client, name, probe(tags[0]))
    published = [client.publish_version(FunctionName=name)]
    for tag in tags[1:]:
        client.update_function_code(FunctionName=name, ZipFile=probe_zip(tag))
        published.append(client.publish_version(FunctionName=name))
    return published


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server()


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


# -- PublishVersion ---------------------------------------------------------------------


def test_publish_numbers_versions_sequentially(client: Any) -> None:
    name = new_name("v-seq")
    zip_one = probe_zip("one")
    client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_one},
    )
    first = client.publish_version(FunctionName=name, Description="first")
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert first["Version"] == "1"
    assert first["FunctionArn"] == f"{ARN_PREFIX}{name}:1"
    assert first["FunctionName"] == name
    assert first["CodeSha256"] == code_sha256(zip_one)
    assert first["CodeSize"] == len(zip_one)
    assert first["Description"] == "first"

    zip_two = probe_zip("two")
    client.update_function_code(FunctionName=name, ZipFile=zip_two)
    second = client.publish_version(FunctionName=name)
    assert second["Version"] == "2"
    assert second["FunctionArn"] == f"{ARN_PREFIX}{name}:2"
    assert second["CodeSha256"] == code_sha256(zip_two)

    # A configuration-only change is a change too.
    client.update_function_configuration(FunctionName=name, Timeout=5)
    third = client.publish_version(FunctionName=name)
    assert third["Version"] == "3"
    assert third["Timeout"] == 5
    assert third["CodeSha256"] == code_sha256(zip_two)
    assert len({first["RevisionId"], second["RevisionId"], third["RevisionId"]}) == 3
    assert version_numbers(client, name) == ["$LATEST", "1", "2", "3"]

    latest = client.get_function_configuration(FunctionName=name)
    assert latest["Version"] == "$LATEST"
    assert latest["FunctionArn"] == f"{ARN_PREFIX}{name}"


def test_publish_without_changes_returns_the_newest_version(client: Any) -> None:
    name = new_name("v-same")
    create_function(client, name, probe("same"))
    first = client.publish_version(FunctionName=name)
    again = client.publish_version(FunctionName=name)
    assert again["Version"] == "1"
    assert again["RevisionId"] == first["RevisionId"]
    assert again["FunctionArn"] == f"{ARN_PREFIX}{name}:1"
    assert version_numbers(client, name) == ["$LATEST", "1"]

    client.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"GREETING": "hi"}}
    )
    second = client.publish_version(FunctionName=name)
    assert second["Version"] == "2"
    assert second["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert client.publish_version(FunctionName=name)["Version"] == "2"
    # Uploading the very same zip changes nothing either.
    same_code = client.update_function_code(
        FunctionName=name, ZipFile=probe_zip("same"), Publish=True
    )
    assert same_code["Version"] == "2"
    assert version_numbers(client, name) == ["$LATEST", "1", "2"]


def test_publish_checks_code_sha256(client: Any) -> None:
    name = new_name("v-sha")
    created = create_function(client, name, probe("sha"))
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.publish_version(FunctionName=name, CodeSha256=code_sha256(b"some other zip"))
    assert version_numbers(client, name) == ["$LATEST"]
    published = client.publish_version(FunctionName=name, CodeSha256=created["CodeSha256"])
    assert published["Version"] == "1"
    assert published["CodeSha256"] == created["CodeSha256"]


def test_publish_checks_revision_id(client: Any) -> None:
    name = new_name("v-rev")
    stale = create_function(client, name, probe("rev"))["RevisionId"]
    current = client.update_function_configuration(FunctionName=name, Timeout=4)["RevisionId"]
    with pytest.raises(client.exceptions.PreconditionFailedException):
        client.publish_version(FunctionName=name, RevisionId=stale)
    assert version_numbers(client, name) == ["$LATEST"]
    published = client.publish_version(FunctionName=name, RevisionId=current)
    assert published["Version"] == "1"
    assert published["Timeout"] == 4


def test_concurrent_publishes_make_one_version(server: FaasServer, client: Any) -> None:
    name = new_name("v-race")
    create_function(client, name, probe("race"))
    clients = [lambda_client(server) for _ in range(8)]
    start = threading.Barrier(len(clients))

    def publish(index: int) -> tuple[str, str]:
        start.wait(10)
        config = clients[index].publish_version(FunctionName=name)
        return config["Version"], config["RevisionId"]

    with ThreadPoolExecutor(len(clients)) as pool:
        outcomes = set(pool.map(publish, range(len(clients))))
    assert len(outcomes) == 1, outcomes
    assert next(iter(outcomes))[0] == "1"
    assert version_numbers(client, name) == ["$LATEST", "1"]


def test_publish_unknown_function(client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.publish_version(FunctionName="v-never-created")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.list_versions_by_function(FunctionName="v-never-created")


def test_publish_flag_on_create_and_update_code(client: Any) -> None:
    name = new_name("v-flag")
    zip_one = probe_zip("flag-1")
    created = client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_one},
        Publish=True,
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["Version"] == "1"
    assert created["FunctionArn"] == f"{ARN_PREFIX}{name}:1"
    assert created["CodeSha256"] == code_sha256(zip_one)

    zip_two = probe_zip("flag-2")
    updated = client.update_function_code(FunctionName=name, ZipFile=zip_two, Publish=True)
    assert updated["Version"] == "2"
    assert updated["FunctionArn"] == f"{ARN_PREFIX}{name}:2"
    assert updated["CodeSha256"] == code_sha256(zip_two)

    assert version_numbers(client, name) == ["$LATEST", "1", "2"]
    one = client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert one["CodeSha256"] == code_sha256(zip_one)
    assert one["RevisionId"] == created["RevisionId"]
    two = client.get_function_configuration(FunctionName=name, Qualifier="2")
    assert two["RevisionId"] == updated["RevisionId"]
    assert invoke_json(client, name, Qualifier="1")[1]["tag"] == "flag-1"
    assert invoke_json(client, name, Qualifier="2")[1]["tag"] == "flag-2"
    assert invoke_json(client, name)[1]["tag"] == "flag-2"


def test_version_numbers_are_never_reused(client: Any) -> None:
    name = new_name("v-reuse")
    with_versions(client, name, ["a", "b"])
    client.delete_function(FunctionName=name, Qualifier="2")
    assert version_numbers(client, name) == ["$LATEST", "1"]
    # $LATEST is still what version 2 was, which differs from version 1: a new number.
    assert client.publish_version(FunctionName=name)["Version"] == "3"
    client.delete_function(FunctionName=name, Qualifier="1")
    client.delete_function(FunctionName=name, Qualifier="3")
    assert version_numbers(client, name) == ["$LATEST"]
    client.update_function_code(FunctionName=name, ZipFile=probe_zip("c"))
    published = client.publish_version(FunctionName=name)
    assert published["Version"] == "4"
    assert published["FunctionArn"] == f"{ARN_PREFIX}{name}:4"
    assert version_numbers(client, name) == ["$LATEST", "4"]
    for gone in ("1", "2", "3"):
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.get_function_configuration(FunctionName=name, Qualifier=gone)


def test_published_version_is_immutable(client: Any) -> None:
    name = new_name("v-frozen")
    create_function(client, name, probe("frozen"))
    published = client.publish_version(FunctionName=name)
    assert invoke_json(client, name, Qualifier="1")[1]["greeting"] is None

    updated = client.update_function_configuration(
        FunctionName=name,
        Timeout=9,
        MemorySize=256,
        Environment={"Variables": {"GREETING": "changed"}},
        Description="changed",
    )
    assert updated["Version"] == "$LATEST"
    client.update_function_code(FunctionName=name, ZipFile=probe_zip("frozen-2"))

    one = client.get_function_configuration(FunctionName=name, Qualifier="1")
    for key in ("Timeout", "MemorySize", "Description", "CodeSha256", "RevisionId", "Version"):
        assert one[key] == published[key], key
    assert (one["Timeout"], one["MemorySize"]) == (3, 128)
    assert "Environment" not in one or not one["Environment"].get("Variables")
    latest = client.get_function_configuration(FunctionName=name)
    assert (latest["Timeout"], latest["MemorySize"]) == (9, 256)

    # The version keeps running its own code and configuration.
    _, frozen = invoke_json(client, name, Qualifier="1")
    assert frozen["tag"] == "frozen"
    assert frozen["greeting"] is None
    assert frozen["remaining_ms"] <= 3000
    _, latest_run = invoke_json(client, name)
    assert latest_run["tag"] == "frozen-2"
    assert latest_run["greeting"] == "changed"

    # Updating a version by name is refused and changes nothing.
    with pytest.raises(ClientError):
        client.update_function_configuration(FunctionName=f"{name}:1", Timeout=20)
    with pytest.raises(ClientError):
        client.update_function_code(FunctionName=f"{name}:1", ZipFile=probe_zip("nope"))
    after = client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert (after["Timeout"], after["RevisionId"]) == (3, published["RevisionId"])
    assert invoke_json(client, name, Qualifier="1")[1]["tag"] == "frozen"


# -- ListVersionsByFunction ------------------------------------------------------------


def test_list_versions_order_and_paging(client: Any) -> None:
    name = new_name("v-list")
    create_function(client, name, probe("list"))
    for timeout in range(4, 15):  # eleven versions: "10" and "11" must sort after "9"
        client.update_function_configuration(FunctionName=name, Timeout=timeout)
        client.publish_version(FunctionName=name)
    expected = ["$LATEST", *(str(n) for n in range(1, 12))]

    everything = client.list_versions_by_function(FunctionName=name)
    assert [v["Version"] for v in everything["Versions"]] == expected
    assert "NextMarker" not in everything
    assert everything["Versions"][0]["FunctionArn"].startswith(f"{ARN_PREFIX}{name}")
    assert everything["Versions"][5]["FunctionArn"] == f"{ARN_PREFIX}{name}:5"
    assert everything["Versions"][5]["Timeout"] == 8

    seen: list[str] = []
    sizes: list[int] = []
    marker = None
    for _ in range(10):
        kwargs: dict[str, Any] = {"FunctionName": name, "MaxItems": 5}
        if marker is not None:
            kwargs["Marker"] = marker
        page = client.list_versions_by_function(**kwargs)
        sizes.append(len(page["Versions"]))
        seen.extend(v["Version"] for v in page["Versions"])
        marker = page.get("NextMarker")
        if marker is None:
            break
    assert sizes == [5, 5, 2]
    assert seen == expected

    paginator = client.get_paginator("list_versions_by_function")
    pages = list(paginator.paginate(FunctionName=name, PaginationConfig={"PageSize": 4}))
    assert [len(p["Versions"]) for p in pages] == [4, 4, 4]
    assert [v["Version"] for p in pages for v in p["Versions"]] == expected
    first_seven = paginator.paginate(
        FunctionName=name, PaginationConfig={"MaxItems": 7, "PageSize": 3}
    ).build_full_result()
    assert [v["Version"] for v in first_seven["Versions"]] == expected[:7]
    assert "NextToken" in first_seven


# -- qualifiers ------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["qualifier", "name:1", "partial-arn:1", "arn:1"])
def test_qualified_references(client: Any, form: str) -> None:
    name = "v-qualified"
    try:
        with_versions(client, name, ["q1", "q2"])
    except client.exceptions.ResourceConflictException:
        pass  # created by an earlier parameter
    reference, qualifier = {
        "qualifier": (name, {"Qualifier": "1"}),
        "name:1": (f"{name}:1", {}),
        "partial-arn:1": (f"{ACCOUNT_ID}:function:{name}:1", {}),
        "arn:1": (f"arn:aws:lambda:us-east-1:000000000000:function:{name}:1", {}),
    }[form]
    config = client.get_function_configuration(FunctionName=reference, **qualifier)
    assert config["Version"] == "1"
    assert config["FunctionArn"] == f"{ARN_PREFIX}{name}:1"
    assert config["CodeSha256"] == code_sha256(probe_zip("q1"))
    function = client.get_function(FunctionName=reference, **qualifier)
    assert function["Configuration"]["Version"] == "1"
    assert function["Configuration"]["RevisionId"] == config["RevisionId"]

    response, payload = invoke_json(client, reference, {"form": form}, **qualifier)
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "1"
    assert payload["tag"] == "q1"
    assert payload["function_version"] == "1"
    assert payload["invoked_arn"] == f"{ARN_PREFIX}{name}:1"

    # Two different qualifiers in one request are refused.
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.get_function_configuration(FunctionName=f"{name}:1", Qualifier="2")
    # $LATEST is unaffected.
    response, latest = invoke_json(client, name)
    assert response["ExecutedVersion"] == "$LATEST"
    assert latest["tag"] == "q2"


def test_get_function_code_location_of_a_version(client: Any) -> None:
    name = new_name("v-code")
    with_versions(client, name, ["code-1", "code-2"])
    for qualifier, tag in (("1", "code-1"), ("2", "code-2"), ("$LATEST", "code-2")):
        location = client.get_function(FunctionName=name, Qualifier=qualifier)["Code"]["Location"]
        try:
            with urllib.request.urlopen(location, timeout=10) as download:
                body = download.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"Code.Location of {name}:{qualifier} answered {exc.code}"
            ) from None
        assert body == probe_zip(tag), qualifier


@pytest.mark.parametrize("qualifier", ["99", "no-such-alias"])
def test_unknown_qualifier_is_not_found(client: Any, qualifier: str) -> None:
    name = "v-unknown"
    try:
        with_versions(client, name, ["u1"])
    except client.exceptions.ResourceConflictException:
        pass  # created by an earlier parameter
    for reference, members in (
        (name, {"Qualifier": qualifier}),
        (f"{name}:{qualifier}", {}),
        (f"{ARN_PREFIX}{name}:{qualifier}", {}),
    ):
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.get_function(FunctionName=reference, **members)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.get_function_configuration(FunctionName=reference, **members)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName=reference, Payload=b"{}", **members)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName=reference, Payload=b"{}", InvocationType="Event", **members)
    if qualifier.isdigit():
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.delete_function(FunctionName=name, Qualifier=qualifier)
    assert version_numbers(client, name) == ["$LATEST", "1"]


def test_list_functions_with_every_version(client: Any) -> None:
    name = new_name("v-all")
    with_versions(client, name, ["all-1", "all-2"])
    latest_only = [
        f
        for page in client.get_paginator("list_functions").paginate()
        for f in page["Functions"]
        if f["FunctionName"] == name
    ]
    assert [f["Version"] for f in latest_only] == ["$LATEST"]

    every = [
        f
        for page in client.get_paginator("list_functions").paginate(
            FunctionVersion="ALL", PaginationConfig={"PageSize": 3}
        )
        for f in page["Functions"]
        if f["FunctionName"] == name
    ]
    assert [f["Version"] for f in every] == ["$LATEST", "1", "2"]
    assert every[1]["FunctionArn"] == f"{ARN_PREFIX}{name}:1"
    assert every[2]["FunctionArn"] == f"{ARN_PREFIX}{name}:2"
    assert every[1]["CodeSha256"] == code_sha256(probe_zip("all-1"))
    assert every[2]["CodeSha256"] == every[0]["CodeSha256"]
    everything = client.list_functions(FunctionVersion="ALL", MaxItems=50)
    keys = [(f["FunctionName"], f["Version"]) for f in everything["Functions"]]
    assert len(keys) == len(set(keys))


def test_delete_one_version(client: Any) -> None:
    name = new_name("v-del")
    with_versions(client, name, ["d1", "d2", "d3"])
    environment = capture_process(invoke_json(client, name, Qualifier="1")[1]["pid"])

    response = client.delete_function(FunctionName=name, Qualifier="1")
    assert response["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_configuration(FunctionName=name, Qualifier="1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=name, Qualifier="1", Payload=b"{}")
    wait_until(lambda: process_is_gone(environment), 10, what="the deleted version's environment")

    client.delete_function(FunctionName=f"{ARN_PREFIX}{name}:2")
    assert version_numbers(client, name) == ["$LATEST", "3"]
    assert invoke_json(client, name, Qualifier="3")[1]["tag"] == "d3"
    assert invoke_json(client, name)[1]["tag"] == "d3"

    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.delete_function(FunctionName=name, Qualifier="$LATEST")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.delete_function(FunctionName=f"{name}:$LATEST")
    assert client.get_function_configuration(FunctionName=name)["Version"] == "$LATEST"
    assert version_numbers(client, name) == ["$LATEST", "3"]

    # Deleting the function deletes its versions: a new function of that name has none.
    client.delete_function(FunctionName=name)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_configuration(FunctionName=name, Qualifier="3")
    create_function(client, name, probe("reborn"))
    assert version_numbers(client, name) == ["$LATEST"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=name, Qualifier="3", Payload=b"{}")


# -- environments ----------------------------------------------------------------------


def test_each_version_has_its_own_environments(client: Any) -> None:
    name = new_name("v-env")
    create_function(client, name, probe("env-1"))
    client.publish_version(FunctionName=name)
    client.update_function_code(FunctionName=name, ZipFile=probe_zip("env-2"))

    runs: dict[str, list[dict[str, Any]]] = {"$LATEST": [], "1": []}
    for _ in range(3):
        for qualifier in runs:
            response, payload = invoke_json(client, name, Qualifier=qualifier)
            assert response["ExecutedVersion"] == qualifier
            assert "FunctionError" not in response
            assert payload["env_version"] == qualifier
            assert payload["function_version"] == qualifier
            runs[qualifier].append(payload)
    latest_pids = {p["pid"] for p in runs["$LATEST"]}
    one_pids = {p["pid"] for p in runs["1"]}
    assert len(latest_pids) == 1, "sequential invokes of $LATEST should reuse one warm environment"
    assert len(one_pids) == 1, "sequential invokes of version 1 should reuse one warm environment"
    assert latest_pids.isdisjoint(one_pids), "$LATEST and version 1 shared an environment"
    assert {p["tag"] for p in runs["$LATEST"]} == {"env-2"}
    assert {p["tag"] for p in runs["1"]} == {"env-1"}
    assert runs["1"][0]["invoked_arn"] == f"{ARN_PREFIX}{name}:1"
    assert runs["$LATEST"][0]["invoked_arn"] in (
        f"{ARN_PREFIX}{name}",
        f"{ARN_PREFIX}{name}:$LATEST",
    )

    (one_pid,) = one_pids
    (old_latest_pid,) = latest_pids
    old_latest = capture_process(old_latest_pid)
    client.update_function_code(FunctionName=name, ZipFile=probe_zip("env-3"))

    _, latest = invoke_json(client, name)
    assert latest["tag"] == "env-3"
    assert latest["pid"] != old_latest_pid
    _, one = invoke_json(client, name, Qualifier="1")
    assert one["tag"] == "env-1"
    assert one["pid"] == one_pid, "updating $LATEST retired version 1's environment"
    wait_until(lambda: process_is_gone(old_latest), 10, what="the old $LATEST environment")

    client.update_function_configuration(
        FunctionName=name, Environment={"Variables": {"GREETING": "new"}}
    )
    assert invoke_json(client, name)[1]["greeting"] == "new"
    _, one = invoke_json(client, name, Qualifier="1")
    assert (one["pid"], one["greeting"]) == (one_pid, None)


def test_idle_version_environments_idle_out(make_server: ServerFactory) -> None:
    client = lambda_client(make_server(idle_timeout_s=1.5))
    name = "v-idle"
    create_function(client, name, probe("idle"))
    client.publish_version(FunctionName=name)
    one = capture_process(invoke_json(client, name, Qualifier="1")[1]["pid"])
    latest_pid = invoke_json(client, name)[1]["pid"]

    def only_latest_is_warm() -> bool:
        assert invoke_json(client, name)[1]["pid"] == latest_pid
        return process_is_gone(one)

    wait_until(only_latest_is_warm, 15, interval_s=0.3, what="version 1's environment to idle out")
    _, again = invoke_json(client, name, Qualifier="1")
    assert again["pid"] != one.pid
    assert again["function_version"] == "1"


# -- restart ---------------------------------------------------------------------------


def test_versions_survive_a_restart(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    name = "v-restart"
    with_versions(client, name, ["r1", "r2"])
    client.update_function_code(FunctionName=name, ZipFile=probe_zip("r3"))
    client.delete_function(FunctionName=name, Qualifier="2")
    before = client.get_function_configuration(FunctionName=name, Qualifier="1")

    assert server.restart() == 0
    client = lambda_client(server)

    assert version_numbers(client, name) == ["$LATEST", "1"]
    after = client.get_function_configuration(FunctionName=name, Qualifier="1")
    for key in ("FunctionArn", "CodeSha256", "RevisionId", "LastModified", "Version", "Timeout"):
        assert after[key] == before[key], key
    response, payload = invoke_json(client, name, Qualifier="1")
    assert (response["ExecutedVersion"], payload["tag"]) == ("1", "r1")
    assert invoke_json(client, name)[1]["tag"] == "r3"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_configuration(FunctionName=name, Qualifier="2")
    # The counter survived too: 2 is not handed out again.
    assert client.publish_version(FunctionName=name)["Version"] == "3"
    assert client.publish_version(FunctionName=name)["Version"] == "3"
