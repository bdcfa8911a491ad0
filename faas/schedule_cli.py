"""``faas schedule add|list|remove``: manage a node's scheduled rules over its HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from faas.node_client import NodeCallError, call_node

_TIMEOUT_S = 30.0
_DEFAULT_ENDPOINT = "http://127.0.0.1:9000"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "schedule", help="add, list or remove rules that invoke a function on a schedule"
    )
    actions = parser.add_subparsers(dest="schedule_action", required=True)
    add = actions.add_parser("add", help="create a rule: rate(...) or cron(...), UTC")
    add.add_argument("name", help="the rule's name ([.-_A-Za-z0-9], up to 64)")
    add.add_argument("--expression", required=True,
                     help="'rate(5 minutes)', 'cron(0 10 * * ? *)', ...")  # fmt: skip
    add.add_argument("--function", required=True, help="the function (name or ARN) to invoke")
    add.add_argument("--qualifier", default="", help="a version or alias of the function")
    add.add_argument("--input", default=None,
                     help="JSON delivered instead of the Scheduled Event")  # fmt: skip
    add.add_argument("--description", default="", help="free text")
    add.add_argument("--disabled", action="store_true", help="create it disabled")
    listing = actions.add_parser("list", help="print every rule and when it fires next")
    listing.add_argument("--json", action="store_true", help="print the node's JSON answer")
    remove = actions.add_parser("remove", help="delete a rule")
    remove.add_argument("name")
    for action in (add, listing, remove):
        action.add_argument("--endpoint-url", "--endpoint", dest="endpoint_url",
                            default=_DEFAULT_ENDPOINT, help="the faas node")  # fmt: skip


def _print_rules(rules: list[dict[str, Any]]) -> None:
    header = ("NAME", "EXPRESSION", "TARGET", "STATE", "NEXT FIRE (UTC)")
    rows = [header] + [
        (
            rule["Name"],
            rule["ScheduleExpression"],
            rule["FunctionName"] + (f":{rule['Qualifier']}" if rule.get("Qualifier") else ""),
            "enabled" if rule["Enabled"] else "disabled",
            rule.get("NextFireTime", "-"),
        )
        for rule in rules
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def run(args: argparse.Namespace) -> int:
    """Run ``faas schedule add|list|remove``; returns the exit status."""
    try:
        return _run(args)
    except NodeCallError as error:
        print(error, file=sys.stderr)
        return 1


def _call(endpoint: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    return call_node(endpoint, method, path, body, timeout_s=_TIMEOUT_S)


def _run(args: argparse.Namespace) -> int:
    endpoint = args.endpoint_url
    if args.schedule_action == "add":
        body: dict[str, Any] = {
            "Name": args.name, "ScheduleExpression": args.expression,
            "FunctionName": args.function, "Description": args.description,
            "Enabled": not args.disabled,
        }  # fmt: skip
        if args.qualifier:
            body["Qualifier"] = args.qualifier
        if args.input is not None:
            body["Input"] = args.input
        rule = _call(endpoint, "POST", "/faas/v1/schedules", body)
        next_fire = rule.get("NextFireTime", "never (disabled)")
        print(f"added {rule['Name']} ({rule['ScheduleExpression']}): next fire {next_fire}")
        return 0
    if args.schedule_action == "remove":
        _call(endpoint, "DELETE", f"/faas/v1/schedules/{urllib.parse.quote(args.name, safe='')}")
        print(f"removed {args.name}")
        return 0
    result = _call(endpoint, "GET", "/faas/v1/schedules")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_rules(result["Schedules"])
    return 0
