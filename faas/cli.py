"""The ``faas`` command: parse flags, build the Config, run the server. The only sys.exit."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from faas import __version__, deploy_cli, dlq_cli, schedule_cli
from faas.bundles import deploy_directory
from faas.config import SETTINGS, Config, ConfigError, load_config, settings_table
from faas.logs import configure_logging
from faas.server import Server

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faas", description="Run AWS Lambda handlers locally.")
    parser.add_argument("--version", action="version", version=f"faas {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a faas node")
    for setting in SETTINGS:
        serve.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            help=f"{setting.help} (env {setting.env_var}, default {setting.default()})",
        )
    serve.add_argument(
        "--deploy",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="deploy the function directories under DIR once serving (repeatable)",
    )
    serve.add_argument("--log-level", default="INFO", help="the node's own log level")
    commands.add_parser("settings", help="print the configuration table (Markdown)")
    deploy_cli.add_parser(commands)
    dlq_cli.add_parser(commands)
    schedule_cli.add_parser(commands)
    bench = commands.add_parser(
        "bench", help="run a load benchmark scenario (see bench/README.md)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


class SignalQueue:
    """Signal handlers only enqueue; the main coroutine dispatches to ``handle_<signal>``."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: asyncio.Queue[signal.Signals] = asyncio.Queue()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._queue.put_nowait, signum)

    async def next(self) -> signal.Signals:
        return await self._queue.get()


def settle_garbage_collector() -> None:
    """Move everything start-up made out of the collector's sight and collect less often.

    The objects alive once serving (modules, the app, the catalog) live until the end;
    with them frozen and a larger young generation, the cyclic collector no longer
    walks them every few hundred allocations of the invoke path.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def serve(config: Config, deploy_dirs: list[Path]) -> None:
    """Run one node until SIGTERM/SIGINT; a second signal skips the drain."""
    signals = SignalQueue()
    signals.install(asyncio.get_running_loop())
    server = Server(config)
    await server.start()
    assert server.catalog is not None
    for directory in deploy_dirs:
        names = await deploy_directory(server.catalog, directory)
        log.info("deployed from %s: %s", directory, ", ".join(names) or "nothing")
    settle_garbage_collector()
    print(f"faas listening on {server.url}", flush=True)
    received = await signals.next()
    log.info("received %s: stopping (a second signal skips the drain)", received.name)
    stopping = asyncio.create_task(server.stop(drain=True))
    second = asyncio.create_task(signals.next())
    done, _ = await asyncio.wait({stopping, second}, return_when=asyncio.FIRST_COMPLETED)
    if second in done and not stopping.done():
        log.info("received %s again: skipping the drain", second.result().name)
        stopping.cancel()
        try:
            await stopping
        except asyncio.CancelledError:
            pass
        server.state = server.state  # stop() was interrupted; finish without draining
        await _force_stop(server)
    else:
        second.cancel()
        await stopping
    log.info("faas stopped")


async def _force_stop(server: Server) -> None:
    from faas.server import ServerState

    server.state = ServerState.SERVING
    await server.stop(drain=False)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "settings":
        print(settings_table())
        return
    if args.command == "deploy-alias":
        sys.exit(deploy_cli.run(args))
    if args.command == "dlq":
        sys.exit(dlq_cli.run(args))
    if args.command == "schedule":
        sys.exit(schedule_cli.run(args))
    if args.command == "bench":
        from bench.cli import main as bench_main

        sys.exit(bench_main(args.bench_args))
    overrides = {setting.name: getattr(args, setting.name) for setting in SETTINGS}
    try:
        config = load_config(os.environ, overrides)
    except ConfigError as exc:
        print(f"faas: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        configure_logging(args.log_level)
    except ValueError as exc:
        print(f"faas: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        uvloop.run(serve(config, args.deploy))
    except Exception:
        log.exception("faas failed")
        sys.exit(1)
    sys.exit(0)
