"""``faas dlq list|redrive QUEUE``: read and redrive a node's own dead-letter queues over HTTP."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.parse
from typing import Any

from faas.node_client import NodeCallError, call_node

_TIMEOUT_S = 60.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dlq", help="list or redrive a dead-letter queue kept in the node's store"
    )
    actions = parser.add_subparsers(dest="dlq_action", required=True)
    listing = actions.add_parser("list", help="print the oldest messages of a queue")
    listing.add_argument("queue", help="the queue (the function it belongs to)")
    listing.add_argument("--max-items", type=int, default=100, help="messages to show (1-1000)")
    listing.add_argument("--json", action="store_true", help="print the node's JSON answer")
    redrive = actions.add_parser(
        "redrive", help="re-invoke the queue's function (Event) with every message, then remove it"
    )
    redrive.add_argument("queue", help="the queue (the function it belongs to)")
    for action in (listing, redrive):
        action.add_argument("--endpoint", "--endpoint-url", dest="endpoint",
                            default="http://127.0.0.1:9000", help="the faas node")  # fmt: skip


def _print_message(message: dict[str, Any]) -> None:
    sent = datetime.datetime.fromtimestamp(message["SentTimestamp"], datetime.UTC)
    attributes = message["Attributes"]
    print(f"{message['MessageId']}  {sent.isoformat(timespec='seconds')}  "
          f"RequestID={attributes.get('RequestID', '-')}  "
          f"ErrorCode={attributes.get('ErrorCode', '-')}")  # fmt: skip
    if attributes.get("ErrorMessage"):
        print(f"  ErrorMessage: {attributes['ErrorMessage']}")
    print(f"  Body: {message['Body']}")


def run(args: argparse.Namespace) -> int:
    """Run ``faas dlq list`` or ``faas dlq redrive``; returns the exit status."""
    try:
        return _run(args)
    except NodeCallError as error:
        print(error, file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    queue = urllib.parse.quote(args.queue, safe="")
    if args.dlq_action == "redrive":
        path = f"/faas/v1/dlq/{queue}/redrive"
        result = call_node(args.endpoint, "POST", path, {}, timeout_s=_TIMEOUT_S)
        print(f"redrove {result['Redriven']} message(s) from {result['QueueArn']}")
        return 0
    path = f"/faas/v1/dlq/{queue}?MaxItems={args.max_items}"
    result = call_node(args.endpoint, "GET", path, timeout_s=_TIMEOUT_S)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['QueueArn']}: {result['ApproximateNumberOfMessages']} message(s)")
    for message in result["Messages"]:
        _print_message(message)
    return 0
