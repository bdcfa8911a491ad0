"""``faas dlq list|redrive QUEUE``: read and redrive a node's own dead-letter queues over HTTP."""

from __future__ import annotations

import argparse
import datetime
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

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
        action.add_argument("--endpoint", default="http://127.0.0.1:9000", help="the faas node")


def _call(endpoint: str, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        endpoint.rstrip("/") + path, data=b"{}" if method == "POST" else None, method=method,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result
    except urllib.error.HTTPError as error:
        detail = json.loads(error.read() or b"{}")
        message = detail.get("message") or detail.get("Message") or error.reason
        raise SystemExit(f"faas: {error.headers.get('x-amzn-ErrorType')}: {message}") from None
    except urllib.error.URLError as error:
        raise SystemExit(f"faas: cannot reach {endpoint}: {error.reason}") from None


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
    queue = urllib.parse.quote(args.queue, safe="")
    if args.dlq_action == "redrive":
        result = _call(args.endpoint, "POST", f"/faas/v1/dlq/{queue}/redrive")
        print(f"redrove {result['Redriven']} message(s) from {result['QueueArn']}")
        return 0
    result = _call(args.endpoint, "GET", f"/faas/v1/dlq/{queue}?MaxItems={args.max_items}")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['QueueArn']}: {result['ApproximateNumberOfMessages']} message(s)")
    for message in result["Messages"]:
        _print_message(message)
    return 0
