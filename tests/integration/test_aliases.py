"""Aliases through real boto3: CRUD with RevisionId, Lambda's rejections, weighted routing,
atomic repointing under load, Event invokes of an alias, and surviving a restart."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from faas_support import (
    ACCOUNT_ID,
    ARN_PREFIX,
    ROLE,
    FaasServer,
    ServerFactory,
    create_function,
    invoke_json,
    lambda_client,
    make_zip,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

# Reports which code ran (TAG), as which version, invoked by which ARN; with "path" in the
# event it also writes that report to the file (for Event invokes).
PROBE = """
import json
import os

TAG = "@TAG@"

def handler(event, context):
    report = {
        "tag": TAG,
        "pid": os.getpid(),
        "env_version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "function_version": context.function_version,
        "invoked_arn": context.invoked_function_arn,
    }
    if event.get("path"):
        with open(event["path"] + ".part", "w") as out:
            json.dump(report, out)
        os.rename(event["path"] + ".part", event["path"])
    return report
"""

TRIVIAL = """
def handler(event, context):
    return None
"""

OTHER_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/faas-other"
DLQ = f"arn:aws:sqs:us-east-1:{ACCOUNT_ID}:faas-dlq"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_names = itertools.count()


def probe(tag: str) -> str:
    return PROBE.replace("@TAG@", tag)


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def weights_of(alias: dict[str, Any]) -> dict[str, float]:
    return dict(alias.get("RoutingConfig", {}).get("AdditionalVersionWeights", {}))


def with_versions(client: Any, name: str, count: int, source: str | None = None) -> None:
    """Create ``name`` and publish versions 1..count; version N runs code tagged "vN"."""
    create_function(client, name, source or probe("v1"))
    client.publish_version(FunctionName=name)
    for number in range(2, count + 1):
        code = source or probe(f"v{number}")
        if source is None:
            client.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": code}))
        else:
            client.update_function_configuration(FunctionName=name, Timeout=2 + number)
        published = client.publish_version(FunctionName=name)
        assert published["Version"] == str(number)


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server()


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


@pytest.fixture
def fn(client: Any) -> str:
    """A fresh function with versions 1, 2 and 3."""
    name = f"al-{next(_names)}"
    with_versions(client, name, 3)
    return name


# -- CRUD ------------------------------------------------------------------------------


def test_alias_create_get_update_delete(client: Any, fn: str) -> None:
    created = client.create_alias(
        FunctionName=fn, Name="live", FunctionVersion="1", Description="the live one"
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["AliasArn"] == f"{ARN_PREFIX}{fn}:live"
    assert (created["Name"], created["FunctionVersion"]) == ("live", "1")
    assert created["Description"] == "the live one"
    assert UUID.fullmatch(created["RevisionId"]), created["RevisionId"]
    assert weights_of(created) == {}

    got = client.get_alias(FunctionName=fn, Name="live")
    for key in ("AliasArn", "Name", "FunctionVersion", "Description", "RevisionId"):
        assert got[key] == created[key], key
    assert (
        client.get_alias(FunctionName=f"{ARN_PREFIX}{fn}", Name="live")["RevisionId"]
        == (created["RevisionId"])
    )

    moved = client.update_alias(FunctionName=fn, Name="live", FunctionVersion="2")
    assert moved["FunctionVersion"] == "2"
    assert moved["Description"] == "the live one"
    assert moved["RevisionId"] != created["RevisionId"]
    described = client.update_alias(FunctionName=fn, Name="live", Description="renamed")
    assert (described["FunctionVersion"], described["Description"]) == ("2", "renamed")
    assert described["RevisionId"] not in (created["RevisionId"], moved["RevisionId"])
    assert client.get_alias(FunctionName=fn, Name="live")["RevisionId"] == described["RevisionId"]

    deleted = client.delete_alias(FunctionName=fn, Name="live")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_alias(FunctionName=fn, Name="live")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.update_alias(FunctionName=fn, Name="live", FunctionVersion="1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=fn, Qualifier="live", Payload=b"{}")
    assert client.list_aliases(FunctionName=fn)["Aliases"] == []
    # The name is free again.
    assert client.create_alias(FunctionName=fn, Name="live", FunctionVersion="3")["Name"] == "live"


def test_delete_missing_alias_is_a_no_op(client: Any, fn: str) -> None:
    response = client.delete_alias(FunctionName=fn, Name="never-existed")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    client.create_alias(FunctionName=fn, Name="twice", FunctionVersion="1")
    client.delete_alias(FunctionName=fn, Name="twice")
    assert (
        client.delete_alias(FunctionName=fn, Name="twice")["ResponseMetadata"]["HTTPStatusCode"]
        == 204
    )


def test_alias_of_latest(client: Any, fn: str) -> None:
    alias = client.create_alias(FunctionName=fn, Name="head", FunctionVersion="$LATEST")
    assert alias["FunctionVersion"] == "$LATEST"
    response, payload = invoke_json(client, fn, Qualifier="head")
    assert response["ExecutedVersion"] == "$LATEST"
    assert payload["invoked_arn"] == f"{ARN_PREFIX}{fn}:head"


def test_routing_config_round_trip(client: Any, fn: str) -> None:
    created = client.create_alias(
        FunctionName=fn,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}},
    )
    assert weights_of(created) == {"2": 0.25}
    assert weights_of(client.get_alias(FunctionName=fn, Name="canary")) == {"2": 0.25}
    # An update that does not mention RoutingConfig keeps it.
    kept = client.update_alias(FunctionName=fn, Name="canary", Description="still routing")
    assert weights_of(kept) == {"2": 0.25}
    assert kept["FunctionVersion"] == "1"
    shifted = client.update_alias(
        FunctionName=fn, Name="canary", RoutingConfig={"AdditionalVersionWeights": {"3": 0.5}}
    )
    assert weights_of(shifted) == {"3": 0.5}
    # Completing a shift: the new primary and no extra version.
    done = client.update_alias(
        FunctionName=fn,
        Name="canary",
        FunctionVersion="3",
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    assert done["FunctionVersion"] == "3"
    assert weights_of(done) == {}
    assert weights_of(client.get_alias(FunctionName=fn, Name="canary")) == {}


def test_list_aliases_paged_and_filtered(client: Any, fn: str) -> None:
    targets = {f"a{index}": str(1 + index % 2) for index in range(7)}
    for alias, version in reversed(targets.items()):
        client.create_alias(FunctionName=fn, Name=alias, FunctionVersion=version)

    everything = client.list_aliases(FunctionName=fn)
    assert [a["Name"] for a in everything["Aliases"]] == sorted(targets)
    assert "NextMarker" not in everything
    assert {a["Name"]: a["FunctionVersion"] for a in everything["Aliases"]} == targets
    assert all(a["AliasArn"] == f"{ARN_PREFIX}{fn}:{a['Name']}" for a in everything["Aliases"])

    seen: list[str] = []
    sizes: list[int] = []
    marker = None
    for _ in range(10):
        kwargs: dict[str, Any] = {"FunctionName": fn, "MaxItems": 3}
        if marker is not None:
            kwargs["Marker"] = marker
        page = client.list_aliases(**kwargs)
        sizes.append(len(page["Aliases"]))
        seen.extend(a["Name"] for a in page["Aliases"])
        marker = page.get("NextMarker")
        if marker is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == sorted(targets)

    paginator = client.get_paginator("list_aliases")
    pages = list(paginator.paginate(FunctionName=fn, PaginationConfig={"PageSize": 2}))
    assert [len(p["Aliases"]) for p in pages] == [2, 2, 2, 1]
    assert [a["Name"] for p in pages for a in p["Aliases"]] == sorted(targets)

    for version in ("1", "2"):
        filtered = [
            a["Name"]
            for p in paginator.paginate(FunctionName=fn, FunctionVersion=version)
            for a in p["Aliases"]
        ]
        assert filtered == sorted(a for a, v in targets.items() if v == version)
    assert client.list_aliases(FunctionName=fn, FunctionVersion="3")["Aliases"] == []
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.list_aliases(FunctionName="al-never-created")


# -- RevisionId ------------------------------------------------------------------------


def test_stale_revision_id_is_refused(client: Any, fn: str) -> None:
    stale = client.create_alias(FunctionName=fn, Name="live", FunctionVersion="1")["RevisionId"]
    current = client.update_alias(FunctionName=fn, Name="live", FunctionVersion="2")
    with pytest.raises(client.exceptions.PreconditionFailedException):
        client.update_alias(FunctionName=fn, Name="live", FunctionVersion="3", RevisionId=stale)
    alias = client.get_alias(FunctionName=fn, Name="live")
    assert (alias["FunctionVersion"], alias["RevisionId"]) == ("2", current["RevisionId"])
    accepted = client.update_alias(
        FunctionName=fn, Name="live", FunctionVersion="3", RevisionId=current["RevisionId"]
    )
    assert accepted["FunctionVersion"] == "3"


@pytest.mark.parametrize("writers", [2, 8])
def test_concurrent_updates_with_one_revision(server: FaasServer, fn: str, writers: int) -> None:
    client = lambda_client(server)
    revision = client.create_alias(FunctionName=fn, Name="race", FunctionVersion="1")["RevisionId"]
    clients = [lambda_client(server) for _ in range(writers)]
    start = threading.Barrier(writers)

    def update(index: int) -> str:
        start.wait(10)
        try:
            clients[index].update_alias(
                FunctionName=fn,
                Name="race",
                FunctionVersion=str(2 + index % 2),
                Description=f"writer {index}",
                RevisionId=revision,
            )
        except clients[index].exceptions.PreconditionFailedException:
            return "stale"
        return f"writer {index}"

    with ThreadPoolExecutor(writers) as pool:
        outcomes = list(pool.map(update, range(writers)))
    winners = [outcome for outcome in outcomes if outcome != "stale"]
    assert len(winners) == 1, outcomes
    assert outcomes.count("stale") == writers - 1
    alias = client.get_alias(FunctionName=fn, Name="race")
    assert alias["Description"] == winners[0]
    assert alias["FunctionVersion"] == str(2 + int(winners[0].split()[1]) % 2)


# -- rejections ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "members", "expected"),
    [
        ("123", {"FunctionVersion": "1"}, "ValidationException"),
        ("bad.name", {"FunctionVersion": "1"}, "ValidationException"),
        ("bad/name", {"FunctionVersion": "1"}, "ValidationException"),
        ("a" * 129, {"FunctionVersion": "1"}, "ValidationException"),
        ("to-alias", {"FunctionVersion": "existing"}, "ValidationException"),
        ("to-nothing", {"FunctionVersion": "99"}, "ResourceNotFoundException"),
        ("extra-nothing", {"FunctionVersion": "1", "W": {"99": 0.1}}, "ResourceNotFoundException"),
        ("latest-primary", {"FunctionVersion": "$LATEST", "W": {"1": 0.1}},
         "InvalidParameterValueException"),
        ("latest-extra", {"FunctionVersion": "1", "W": {"$LATEST": 0.1}},
         "InvalidParameterValueException"),
        ("two-extras", {"FunctionVersion": "1", "W": {"2": 0.1, "3": 0.1}},
         "InvalidParameterValueException"),
        ("too-heavy", {"FunctionVersion": "1", "W": {"2": 1.5}}, "ValidationException"),
        ("negative", {"FunctionVersion": "1", "W": {"2": -0.1}}, "ValidationException"),
        ("extra-alias", {"FunctionVersion": "1", "W": {"existing": 0.1}}, "ValidationException"),
        ("self-extra", {"FunctionVersion": "2", "W": {"2": 0.1}},
         "InvalidParameterValueException"),
        ("existing", {"FunctionVersion": "2"}, "ResourceConflictException"),
    ],
    ids=["digits", "dot", "slash", "129-chars", "to-alias", "to-nothing", "extra-nothing",
         "latest-primary", "latest-extra", "two-extras", "too-heavy", "negative", "extra-alias",
         "self-extra", "duplicate"],
)  # fmt: skip
def test_create_alias_rejections(
    server: FaasServer, fn: str, name: str, members: dict[str, Any], expected: str
) -> None:
    # No client-side validation, so out-of-range weights reach the server as sent.
    client = lambda_client(server, parameter_validation=False)
    client.create_alias(FunctionName=fn, Name="existing", FunctionVersion="1")
    request: dict[str, Any] = {"FunctionName": fn, "Name": name}
    request["FunctionVersion"] = members["FunctionVersion"]
    if "W" in members:
        request["RoutingConfig"] = {"AdditionalVersionWeights": members["W"]}
    with pytest.raises(ClientError) as excinfo:
        client.create_alias(**request)
    assert error_code(excinfo) == expected, excinfo.value.response
    assert [a["Name"] for a in client.list_aliases(FunctionName=fn)["Aliases"]] == ["existing"]
    existing = client.get_alias(FunctionName=fn, Name="existing")
    assert (existing["FunctionVersion"], weights_of(existing)) == ("1", {})


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"FunctionVersion": "other"}, "ValidationException"),
        ({"FunctionVersion": "99"}, "ResourceNotFoundException"),
        ({"FunctionVersion": "$LATEST", "W": {"2": 0.1}}, "InvalidParameterValueException"),
        ({"W": {"$LATEST": 0.1}}, "InvalidParameterValueException"),
        ({"W": {"2": 0.1, "3": 0.1}}, "InvalidParameterValueException"),
        ({"W": {"2": 1.5}}, "ValidationException"),
        ({"W": {"2": -0.1}}, "ValidationException"),
        ({"W": {"1": 0.5}}, "InvalidParameterValueException"),
        ({"FunctionVersion": "2", "W": {"2": 0.5}}, "InvalidParameterValueException"),
    ],
    ids=["to-alias", "to-nothing", "latest-primary", "latest-extra", "two-extras", "too-heavy",
         "negative", "extra-is-primary", "primary-is-extra"],
)  # fmt: skip
def test_update_alias_rejections_leave_it_unchanged(
    server: FaasServer, fn: str, members: dict[str, Any], expected: str
) -> None:
    client = lambda_client(server, parameter_validation=False)
    client.create_alias(FunctionName=fn, Name="other", FunctionVersion="3")
    before = client.create_alias(
        FunctionName=fn,
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"3": 0.1}},
    )
    request: dict[str, Any] = {"FunctionName": fn, "Name": "live"}
    if "FunctionVersion" in members:
        request["FunctionVersion"] = members["FunctionVersion"]
    if "W" in members:
        request["RoutingConfig"] = {"AdditionalVersionWeights": members["W"]}
    with pytest.raises(ClientError) as excinfo:
        client.update_alias(**request)
    assert error_code(excinfo) == expected, excinfo.value.response
    after = client.get_alias(FunctionName=fn, Name="live")
    assert after["RevisionId"] == before["RevisionId"]
    assert (after["FunctionVersion"], weights_of(after)) == ("1", {"3": 0.1})


def test_versions_with_different_role_or_dead_letter_config(client: Any) -> None:
    name = f"al-{next(_names)}"
    with_versions(client, name, 1)
    client.update_function_configuration(FunctionName=name, Role=OTHER_ROLE)
    assert client.publish_version(FunctionName=name)["Role"] == OTHER_ROLE  # version 2
    client.update_function_configuration(
        FunctionName=name, Role=ROLE, DeadLetterConfig={"TargetArn": DLQ}
    )
    assert client.publish_version(FunctionName=name)["DeadLetterConfig"] == {"TargetArn": DLQ}
    client.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": ""})
    assert client.publish_version(FunctionName=name)["Version"] == "4"  # same as version 1

    for primary, extra in (("1", "2"), ("2", "1"), ("1", "3"), ("3", "1")):
        with pytest.raises(client.exceptions.InvalidParameterValueException):
            client.create_alias(
                FunctionName=name,
                Name=f"mixed-{primary}-{extra}",
                FunctionVersion=primary,
                RoutingConfig={"AdditionalVersionWeights": {extra: 0.5}},
            )
    alias = client.create_alias(
        FunctionName=name,
        Name="same",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"4": 0.5}},
    )
    assert weights_of(alias) == {"4": 0.5}
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_alias(
            FunctionName=name, Name="same", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}}
        )
    assert [a["Name"] for a in client.list_aliases(FunctionName=name)["Aliases"]] == ["same"]


def test_alias_of_unknown_function(client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.create_alias(FunctionName="al-never-created", Name="live", FunctionVersion="1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_alias(FunctionName="al-never-created", Name="live")


def test_deleting_a_routed_version_conflicts(client: Any, fn: str) -> None:
    client.create_alias(
        FunctionName=fn,
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )
    for version in ("1", "2"):
        with pytest.raises(client.exceptions.ResourceConflictException):
            client.delete_function(FunctionName=fn, Qualifier=version)
        with pytest.raises(client.exceptions.ResourceConflictException):
            client.delete_function(FunctionName=f"{ARN_PREFIX}{fn}:{version}")
    assert client.get_function_configuration(FunctionName=fn, Qualifier="2")["Version"] == "2"
    client.delete_function(FunctionName=fn, Qualifier="3")  # nobody routes to 3

    client.update_alias(
        FunctionName=fn, Name="live", RoutingConfig={"AdditionalVersionWeights": {}}
    )
    client.delete_function(FunctionName=fn, Qualifier="2")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_configuration(FunctionName=fn, Qualifier="2")
    with pytest.raises(client.exceptions.ResourceConflictException):
        client.delete_function(FunctionName=fn, Qualifier="1")
    client.delete_alias(FunctionName=fn, Name="live")
    client.delete_function(FunctionName=fn, Qualifier="1")
    versions = client.list_versions_by_function(FunctionName=fn)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST"]


def test_deleting_the_function_deletes_its_aliases(client: Any, fn: str) -> None:
    client.create_alias(FunctionName=fn, Name="live", FunctionVersion="2")
    client.delete_function(FunctionName=fn)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_alias(FunctionName=fn, Name="live")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=fn, Qualifier="live", Payload=b"{}")
    create_function(client, fn, probe("reborn"))
    assert client.list_aliases(FunctionName=fn)["Aliases"] == []
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_alias(FunctionName=fn, Name="live")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=fn, Qualifier="live", Payload=b"{}")


# -- invoking an alias -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["qualifier", "name:alias", "arn:alias"])
def test_invoke_alias_reports_the_executed_version(client: Any, fn: str, form: str) -> None:
    client.create_alias(FunctionName=fn, Name="live", FunctionVersion="2")
    reference, members = {
        "qualifier": (fn, {"Qualifier": "live"}),
        "name:alias": (f"{fn}:live", {}),
        "arn:alias": (f"arn:aws:lambda:us-east-1:000000000000:function:{fn}:live", {}),
    }[form]
    response, payload = invoke_json(client, reference, **members)
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "2"
    assert payload["tag"] == "v2"
    assert payload["function_version"] == "2"
    assert payload["env_version"] == "2"
    assert payload["invoked_arn"] == f"{ARN_PREFIX}{fn}:live"

    config = client.get_function_configuration(FunctionName=reference, **members)
    assert config["Version"] == "2"
    function = client.get_function(FunctionName=reference, **members)
    assert function["Configuration"]["Version"] == "2"


def test_update_alias_takes_effect_on_the_next_invoke(client: Any, fn: str) -> None:
    client.create_alias(FunctionName=fn, Name="live", FunctionVersion="1")
    for version in ("1", "3", "2", "1", "$LATEST", "3"):
        client.update_alias(FunctionName=fn, Name="live", FunctionVersion=version)
        response, payload = invoke_json(client, fn, Qualifier="live")
        assert response["ExecutedVersion"] == version
        assert payload["function_version"] == version
        assert payload["tag"] == ("v3" if version == "$LATEST" else f"v{version}")


def test_weights_zero_and_one(client: Any, fn: str) -> None:
    client.create_alias(
        FunctionName=fn,
        Name="edge",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}},
    )
    executed = [invoke_json(client, fn, Qualifier="edge")[0]["ExecutedVersion"] for _ in range(20)]
    assert set(executed) == {"2"}
    client.update_alias(
        FunctionName=fn, Name="edge", RoutingConfig={"AdditionalVersionWeights": {"2": 0.0}}
    )
    executed = [invoke_json(client, fn, Qualifier="edge")[0]["ExecutedVersion"] for _ in range(20)]
    assert set(executed) == {"1"}


def test_weighted_routing_share(server: FaasServer) -> None:
    client = lambda_client(server)
    name = f"al-{next(_names)}"
    with_versions(client, name, 2, source=TRIVIAL)
    client.create_alias(
        FunctionName=name,
        Name="weighted",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.2}},
    )
    threads, per_thread = 8, 500
    clients = [lambda_client(server) for _ in range(threads)]

    def work(index: int) -> Counter[str]:
        executed: Counter[str] = Counter()
        for _ in range(per_thread):
            response = clients[index].invoke(FunctionName=name, Qualifier="weighted", Payload=b"{}")
            response["Payload"].read()
            assert response["StatusCode"] == 200
            assert "FunctionError" not in response
            executed[response["ExecutedVersion"]] += 1
        return executed

    with ThreadPoolExecutor(threads) as pool:
        totals = sum(pool.map(work, range(threads)), Counter())
    assert sum(totals.values()) == threads * per_thread
    assert set(totals) == {"1", "2"}, totals
    share = totals["2"] / (threads * per_thread)
    assert 0.175 <= share <= 0.225, f"version 2 ran {share:.2%} of {dict(totals)}"


def _all_moved_on(counts: list[int], marks: list[int]) -> bool:
    return all(count > mark for count, mark in zip(counts, marks, strict=True))


def test_repointing_under_load_never_fails(server: FaasServer, fn: str) -> None:
    client = lambda_client(server)
    client.create_alias(FunctionName=fn, Name="flip", FunctionVersion="1")
    alias_arn = f"{ARN_PREFIX}{fn}:flip"
    stop = threading.Event()
    loaders = 4
    clients = [lambda_client(server) for _ in range(loaders)]

    running = [threading.Event() for _ in range(loaders)]
    answered = [0] * loaders  # invokes each loader has had answered (or failed)

    def load(index: int) -> list[Any]:
        outcomes: list[Any] = []
        while not stop.is_set():
            answered[index] = len(outcomes)
            if outcomes:
                running[index].set()
            try:
                response, payload = invoke_json(clients[index], fn, Qualifier="flip")
            except Exception as exc:  # every failure is an outcome to report
                outcomes.append(repr(exc))
                continue
            outcomes.append(
                (
                    response["StatusCode"],
                    response.get("FunctionError"),
                    response["ExecutedVersion"],
                    payload,
                )
            )
        return outcomes

    targets = ["2", "1"] * 10
    with ThreadPoolExecutor(loaders) as pool:
        futures = [pool.submit(load, index) for index in range(loaders)]
        try:
            for event in running:  # every loader is invoking before the first repoint
                assert event.wait(30), "a loader never got an answer"
            for target in targets:
                client.update_alias(FunctionName=fn, Name="flip", FunctionVersion=target)
                response, _ = invoke_json(client, fn, Qualifier="flip")
                assert response["ExecutedVersion"] == target
                # Every loader invokes again before the next repoint.
                wait_until(partial(_all_moved_on, answered, list(answered)), 30,
                           what="every loader to invoke after a repoint")  # fmt: skip
        finally:
            stop.set()
        outcomes = [outcome for future in futures for outcome in future.result()]

    failures = [o for o in outcomes if not isinstance(o, tuple) or o[0] != 200 or o[1] is not None]
    assert not failures, failures[:5]
    executed = Counter(o[2] for o in outcomes)
    assert set(executed) == {"1", "2"}, executed
    assert len(outcomes) > 100, f"only {len(outcomes)} invokes under load"
    for _, _, version, payload in outcomes:
        assert payload["function_version"] == version
        assert payload["tag"] == f"v{version}"
        assert payload["invoked_arn"] == alias_arn


def test_event_invoke_of_an_alias_runs_the_routed_version(
    client: Any, fn: str, tmp_path: Path
) -> None:
    client.create_alias(
        FunctionName=fn,
        Name="async",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}},
    )

    def run_event(tag: str) -> dict[str, Any]:
        path = tmp_path / tag
        response = client.invoke(
            FunctionName=fn,
            Qualifier="async",
            InvocationType="Event",
            Payload=json.dumps({"path": str(path)}).encode(),
        )
        assert response["StatusCode"] == 202
        wait_until(path.exists, 20, what=f"the {tag} event to run")
        report: dict[str, Any] = json.loads(path.read_text())
        return report

    routed = run_event("routed")
    assert (routed["function_version"], routed["env_version"], routed["tag"]) == ("2", "2", "v2")
    assert routed["invoked_arn"] == f"{ARN_PREFIX}{fn}:async"

    client.update_alias(
        FunctionName=fn,
        Name="async",
        FunctionVersion="3",
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    repointed = run_event("repointed")
    assert (repointed["function_version"], repointed["tag"]) == ("3", "v3")
    assert repointed["invoked_arn"] == f"{ARN_PREFIX}{fn}:async"


# -- restart ---------------------------------------------------------------------------


def test_aliases_survive_a_restart(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    name = "al-restart"
    with_versions(client, name, 3)
    live = client.create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion="1",
        Description="routed",
        RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}},
    )
    stable = client.create_alias(FunctionName=name, Name="stable", FunctionVersion="3")
    client.create_alias(FunctionName=name, Name="gone", FunctionVersion="3")
    client.delete_alias(FunctionName=name, Name="gone")

    assert server.restart() == 0
    client = lambda_client(server)

    aliases = client.list_aliases(FunctionName=name)["Aliases"]
    assert [a["Name"] for a in aliases] == ["live", "stable"]
    for before in (live, stable):
        after = client.get_alias(FunctionName=name, Name=before["Name"])
        for key in ("AliasArn", "FunctionVersion", "Description", "RevisionId"):
            assert after[key] == before[key], key
        assert weights_of(after) == weights_of(before)
    versions = client.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2", "3"]

    response, payload = invoke_json(client, name, Qualifier="live")
    assert (response["ExecutedVersion"], payload["tag"]) == ("2", "v2")
    assert payload["invoked_arn"] == f"{ARN_PREFIX}{name}:live"
    assert invoke_json(client, name, Qualifier="stable")[1]["tag"] == "v3"
    with pytest.raises(client.exceptions.ResourceConflictException):
        client.delete_function(FunctionName=name, Qualifier="2")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_alias(FunctionName=name, Name="gone")

    # The stored RevisionId is still the one to present.
    updated = client.update_alias(
        FunctionName=name, Name="live", FunctionVersion="3", RevisionId=live["RevisionId"],
        RoutingConfig={"AdditionalVersionWeights": {}},
    )  # fmt: skip
    assert updated["FunctionVersion"] == "3"
    assert invoke_json(client, name, Qualifier="live")[0]["ExecutedVersion"] == "3"
