"""``faas deploy-alias``: start a traffic-shifting deployment and follow it live."""

from __future__ import annotations

import argparse
import time
from typing import Any

from faas.node_client import NodeCallError, call_node

_TERMINAL = {"Succeeded", "RolledBack", "Stopped"}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "deploy-alias", help="shift an alias to a version gradually, with automatic rollback"
    )
    parser.add_argument("function")
    parser.add_argument("alias")
    parser.add_argument("version")
    parser.add_argument("--preference", default="AllAtOnce",
                        help="AllAtOnce, Canary10Percent5Minutes, Linear10PercentEvery1Minute, "
                             "..., or Canary:PERCENT:SECONDS / Linear:PERCENT:SECONDS")  # fmt: skip
    parser.add_argument("--endpoint", default="http://127.0.0.1:9000", help="the faas node")
    parser.add_argument("--error-rate-threshold", type=float, default=0.1,
                        help="roll back above this target error rate (0-1)")  # fmt: skip
    parser.add_argument("--min-invocations", type=int, default=5,
                        help="target invocations needed to judge its error rate")  # fmt: skip
    parser.add_argument("--pre-traffic-hook", default="", help="function run before the shift")
    parser.add_argument("--post-traffic-hook", default="", help="function run after the shift")
    parser.add_argument("--no-wait", action="store_true", help="start it and return")


def _call(endpoint: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    try:
        return call_node(endpoint, method, path, body)
    except NodeCallError as error:
        raise SystemExit(str(error)) from None


def run(args: argparse.Namespace) -> int:
    """Start the deployment; follow it until it ends. Returns 0 on success, 1 on rollback."""
    # Imported here: `faas serve` never needs them, and they cost its start-up ~40 ms.
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console()
    deployment = _call(args.endpoint, "POST", "/faas/v1/deployments", {
        "FunctionName": args.function, "Alias": args.alias, "TargetVersion": args.version,
        "Preference": args.preference, "ErrorRateThreshold": args.error_rate_threshold,
        "MinInvocations": args.min_invocations, "PreTrafficHook": args.pre_traffic_hook,
        "PostTrafficHook": args.post_traffic_hook,
    })  # fmt: skip
    deployment_id = deployment["DeploymentId"]
    moving = f"{deployment['OriginalVersion']} -> {args.version} ({args.preference})"
    console.print(f"deployment {deployment_id}: {args.function}:{args.alias} {moving}")
    if args.no_wait:
        return 0
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>5.1f}% on the target"),
                  console=console) as progress:  # fmt: skip
        task = progress.add_task(deployment["State"], total=100)
        while deployment["State"] not in _TERMINAL:
            time.sleep(0.5)
            deployment = _call(args.endpoint, "GET", f"/faas/v1/deployments/{deployment_id}")
            progress.update(task, completed=deployment["TargetWeight"] * 100,
                            description=deployment["State"])  # fmt: skip
    console.print(f"{deployment['State']}: {deployment['Reason']}")
    return 0 if deployment["State"] == "Succeeded" else 1
