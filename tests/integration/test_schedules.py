"""Scheduled rules on a real node: the HTTP API, the ``faas schedule`` CLI, and a real firing.

The firing test waits for a real minute boundary (up to ~60 s), once: every rule in
it fires at the same boundary, and the restart that follows checks the persisted
last fired tick keeps that tick from firing again.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from faas_support import (
    ACCOUNT_ID,
    ARN_PREFIX,
    REGION,
    FaasServer,
    ServerFactory,
    create_function,
    lambda_client,
    wait_until,
)

pytestmark = pytest.mark.timeout(150)

# Appends one JSON line per invocation: the event, the invoked ARN and the request id.
RECORDER = """
import json
import os

def handler(event, context):
    line = json.dumps({"event": event, "arn": context.invoked_function_arn,
                       "request_id": context.aws_request_id})
    with open(os.path.join(os.environ["WORK_DIR"], "events.jsonl"), "a") as out:
        out.write(line + "\\n")
    return {"ok": True}
"""


def _http(server: FaasServer, method: str, path: str, body: Any = None) -> tuple[int, str, Any]:
    """(status, x-amzn-ErrorType or "", decoded JSON body) of one request to the node."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, "", json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, error.headers.get("x-amzn-ErrorType", ""), json.loads(raw)


def _schedule_metric(server: FaasServer, rule: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = rf'faas_schedule_invocations_total\{{rule="{re.escape(rule)}"\}} (\S+)'
    return sum(float(value) for value in re.findall(pattern, text))


def _recorded(work: Path) -> list[dict[str, Any]]:
    path = work / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _queue_depth(server: FaasServer) -> int:
    uri = f"file:{server.data_dir / 'registry.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _epoch(iso: str) -> float:
    return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))


def _faas_cli(server: FaasServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faas", "schedule", *args, "--endpoint-url", server.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def node(make_module_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> FaasServer:
    """One node with ``sched-target`` (version 1, alias ``live``) for the API and CLI tests."""
    server = make_module_server()
    client = lambda_client(server)
    work = tmp_path_factory.mktemp("schedules")
    create_function(client, "sched-target", RECORDER,
                    Environment={"Variables": {"WORK_DIR": str(work)}})  # fmt: skip
    client.publish_version(FunctionName="sched-target")
    client.create_alias(FunctionName="sched-target", Name="live", FunctionVersion="1")
    return server


def test_schedule_lifecycle_over_http(node: FaasServer) -> None:
    status, _, created = _http(node, "POST", "/faas/v1/schedules", {
        "Name": "http-rule", "ScheduleExpression": "rate(5 minutes)",
        "FunctionName": "sched-target", "Description": "every five",
    })  # fmt: skip
    assert status == 201
    assert created["Arn"] == f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/http-rule"
    assert created["FunctionArn"] == ARN_PREFIX + "sched-target"
    assert (created["ScheduleExpression"], created["Enabled"]) == ("rate(5 minutes)", True)
    assert "Qualifier" not in created and "Input" not in created
    assert "LastFiredTick" not in created
    # rate() counts from the creation minute: the first tick is 5 minutes after it.
    created_at = _epoch(created["CreatedAt"])
    assert _epoch(created["NextFireTime"]) == created_at - created_at % 60 + 300

    assert _http(node, "GET", "/faas/v1/schedules/http-rule") == (200, "", created)
    _, _, listing = _http(node, "GET", "/faas/v1/schedules")
    assert created in listing["Schedules"]

    status, _, disabled = _http(node, "PUT", "/faas/v1/schedules/http-rule", {"Enabled": False})
    assert status == 200 and disabled["Enabled"] is False and "NextFireTime" not in disabled
    _, _, changed = _http(node, "PUT", "/faas/v1/schedules/http-rule", {
        "Enabled": True, "ScheduleExpression": "cron(0 10 * * ? *)", "Qualifier": "live",
        "Input": {"job": "report"},
    })  # fmt: skip
    assert changed["NextFireTime"].endswith("T10:00:00Z")
    assert changed["FunctionArn"] == ARN_PREFIX + "sched-target:live"
    assert json.loads(changed["Input"]) == {"job": "report"}
    assert changed["Description"] == "every five"
    _, _, reverted = _http(node, "PUT", "/faas/v1/schedules/http-rule",
                           {"Input": None, "FunctionName": "sched-target"})  # fmt: skip
    assert "Input" not in reverted and "Qualifier" not in reverted

    assert _http(node, "DELETE", "/faas/v1/schedules/http-rule") == (204, "", None)
    status, error_type, body = _http(node, "GET", "/faas/v1/schedules/http-rule")
    assert (status, error_type) == (404, "ResourceNotFoundException")
    assert body["Message"] == "Rule http-rule does not exist."


@pytest.mark.parametrize(
    ("body", "status", "error_type", "message"),
    [
        ({"ScheduleExpression": "cron(0 10 * * ?)"}, 400, "InvalidParameterValueException",
         "Parameter ScheduleExpression is not valid: cron needs six fields"),
        ({"ScheduleExpression": "rate(1 minutes)"}, 400, "InvalidParameterValueException",
         "with value 1 the unit is 'minute'"),
        ({"ScheduleExpression": "cron(0 10 * * * *)"}, 400, "InvalidParameterValueException",
         "exactly one of day-of-month and day-of-week must be '?'"),
        # Once stored and answered with a 500: its next tick (year 10^17) broke every listing.
        ({"ScheduleExpression": "rate(99999999999999999999999 minutes)"}, 400,
         "InvalidParameterValueException", "is too large"),
        ({"ScheduleExpression": None}, 400, "InvalidParameterValueException",
         "ScheduleExpression is required"),
        ({"FunctionName": "no-such-function"}, 404, "ResourceNotFoundException",
         "Function not found: " + ARN_PREFIX + "no-such-function"),
        ({"Qualifier": "nope"}, 404, "ResourceNotFoundException", "sched-target:nope"),
        ({"Name": "bad name!"}, 400, "ValidationException", "at 'name' failed to satisfy"),
        ({"Input": "{not json"}, 400, "InvalidParameterValueException", "Input is not valid JSON"),
        ({"Enabled": "yes"}, 400, "InvalidParameterValueException", "Enabled must be true"),
    ],
)  # fmt: skip
def test_bad_rules_are_refused_in_lambda_shape(
    node: FaasServer, body: dict[str, Any], status: int, error_type: str, message: str
) -> None:
    request = {"Name": "refused", "ScheduleExpression": "rate(1 hour)",
               "FunctionName": "sched-target", **body}  # fmt: skip
    answer = _http(node, "POST", "/faas/v1/schedules", request)
    assert answer[:2] == (status, error_type)
    assert message in (answer[2].get("message") or answer[2].get("Message"))
    assert _http(node, "GET", "/faas/v1/schedules/refused")[0] == 404
    assert _http(node, "GET", "/faas/v1/schedules")[0] == 200


def test_duplicate_names_and_unknown_rules(node: FaasServer) -> None:
    rule = {"Name": "twice", "ScheduleExpression": "rate(1 day)", "FunctionName": "sched-target"}
    assert _http(node, "POST", "/faas/v1/schedules", rule)[0] == 201
    status, error_type, body = _http(node, "POST", "/faas/v1/schedules", rule)
    assert (status, error_type, body["message"]) == (
        409, "ResourceConflictException", "Rule twice already exists."
    )  # fmt: skip
    status, error_type, _ = _http(node, "PUT", "/faas/v1/schedules/twice",
                                  {"ScheduleExpression": "cron(0 0 ? * 8 *)"})  # fmt: skip
    assert (status, error_type) == (400, "InvalidParameterValueException")
    assert _http(node, "GET", "/faas/v1/schedules/twice")[2]["ScheduleExpression"] == "rate(1 day)"
    assert _http(node, "DELETE", "/faas/v1/schedules/twice")[0] == 204
    for method in ("PUT", "DELETE"):
        status, error_type, _ = _http(node, method, "/faas/v1/schedules/twice", {})
        assert (status, error_type) == (404, "ResourceNotFoundException")


def test_schedule_cli(node: FaasServer) -> None:
    added = _faas_cli(node, "add", "cli-rule", "--expression", "rate(5 minutes)",
                      "--function", "sched-target", "--qualifier", "live",
                      "--input", '{"from": "cli"}')  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added cli-rule (rate(5 minutes)): next fire 20")

    listed = _faas_cli(node, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("cli-rule"))
    assert re.fullmatch(r"cli-rule\s+rate\(5 minutes\)\s+sched-target:live\s+enabled\s+\S+Z",
                        line), line  # fmt: skip
    as_json = json.loads(_faas_cli(node, "list", "--json").stdout)
    (rule,) = [r for r in as_json["Schedules"] if r["Name"] == "cli-rule"]
    assert (rule["Qualifier"], json.loads(rule["Input"])) == ("live", {"from": "cli"})

    refused = _faas_cli(node, "add", "cli-bad", "--expression", "cron(0 10 * * ?)",
                        "--function", "sched-target")  # fmt: skip
    assert refused.returncode == 1
    assert "InvalidParameterValueException" in refused.stderr
    assert "six fields" in refused.stderr

    removed = _faas_cli(node, "remove", "cli-rule")
    assert (removed.returncode, removed.stdout.strip()) == (0, "removed cli-rule")
    assert _http(node, "GET", "/faas/v1/schedules/cli-rule")[0] == 404
    again = _faas_cli(node, "remove", "cli-rule")
    assert again.returncode == 1 and "ResourceNotFoundException" in again.stderr


def test_schedule_cli_failures_are_one_line_without_a_traceback() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with socket.socket() as hangs_up:  # accepts a connection, then closes it unanswered
        hangs_up.bind(("127.0.0.1", 0))
        hangs_up.listen()

        def hang_up() -> None:
            with contextlib.suppress(OSError):
                connection, _ = hangs_up.accept()
                connection.close()

        threading.Thread(target=hang_up, daemon=True).start()
        cases = [
            (f"http://127.0.0.1:{closed_port}", "cannot reach"),
            ("127.0.0.1:9000", "is not a URL"),
            (f"http://127.0.0.1:{hangs_up.getsockname()[1]}", "no answer from"),
        ]
        for endpoint, message in cases:
            completed = subprocess.run(
                [sys.executable, "-m", "faas", "schedule", "list", "--endpoint-url", endpoint],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert completed.returncode == 1, completed
            assert completed.stderr.startswith("faas: ") and message in completed.stderr
            assert "Traceback" not in completed.stderr


def test_rules_fire_at_the_minute_and_a_restart_does_not_repeat_the_tick(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    client = lambda_client(server)
    create_function(client, "tick-target", RECORDER,
                    Environment={"Variables": {"WORK_DIR": str(tmp_path)}})  # fmt: skip
    client.publish_version(FunctionName="tick-target")
    client.create_alias(FunctionName="tick-target", Name="live", FunctionVersion="1")
    # cron(* * * * ? *) and rate(1 minute) made in the same minute fire at its end
    # together; keep clear of a boundary so both are made in the same minute.
    wait_until(lambda: 1 < time.time() % 60 < 57, 10, interval_s=0.2,
               what="a moment away from a minute boundary")  # fmt: skip
    rules = [
        {"Name": "every-minute", "ScheduleExpression": "cron(* * * * ? *)"},
        {"Name": "with-input", "ScheduleExpression": "rate(1 minute)", "Qualifier": "live",
         "Input": '{"marker": "input"}'},
        {"Name": "switched-off", "ScheduleExpression": "cron(* * * * ? *)", "Enabled": False},
    ]  # fmt: skip
    for rule in rules:
        status, _, _ = _http(server, "POST", "/faas/v1/schedules",
                             {"FunctionName": "tick-target", **rule})  # fmt: skip
        assert status == 201

    recorded = wait_until(lambda: len(_recorded(tmp_path)) >= 2 and _recorded(tmp_path), 75,
                          interval_s=0.2, what="both rules to fire")  # fmt: skip
    by_kind = {("input" if "marker" in r["event"] else "envelope"): r for r in recorded}
    envelope = by_kind["envelope"]
    event = envelope["event"]
    tick = event["time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", tick), tick
    assert event == {
        "version": "0", "id": envelope["request_id"], "detail-type": "Scheduled Event",
        "source": "aws.events", "account": ACCOUNT_ID, "time": tick, "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/every-minute"], "detail": {},
    }  # fmt: skip
    assert envelope["arn"] == ARN_PREFIX + "tick-target"
    assert by_kind["input"]["event"] == {"marker": "input"}
    assert by_kind["input"]["arn"] == ARN_PREFIX + "tick-target:live"
    assert _schedule_metric(server, "every-minute") == 1
    assert _schedule_metric(server, "with-input") == 1
    assert _schedule_metric(server, "switched-off") == 0

    _, _, fired = _http(server, "GET", "/faas/v1/schedules/every-minute")
    assert fired["LastFiredTick"] == tick
    assert _epoch(fired["NextFireTime"]) == _epoch(tick) + 60
    wait_until(lambda: _queue_depth(server) == 0, 20, what="the fired events to be acknowledged")

    # A new incarnation within the same minute: the recorded tick is not fired again.
    assert time.time() < _epoch(tick) + 45, "too close to the next tick to tell"
    server.restart()
    _, _, reloaded = _http(server, "GET", "/faas/v1/schedules/every-minute")
    assert (reloaded["LastFiredTick"], reloaded["NextFireTime"]) == (
        fired["LastFiredTick"], fired["NextFireTime"]
    )  # fmt: skip
    # The start-up pass (run before the node listens) enqueued nothing.
    assert _schedule_metric(server, "every-minute") == 0
    assert _schedule_metric(server, "with-input") == 0
    assert _queue_depth(server) == 0
    assert len(_recorded(tmp_path)) == 2
