"""Shared test fixtures: real `faas serve` subprocesses on port 0, boto3 clients, in-memory zips.

Design notes: a server is always a real ``python -m faas serve --port 0`` child process.
Its bound address is read back from the ``faas listening on http://HOST:PORT`` line on
stdout (never pre-picked). Factories record every server they start and stop them at
teardown with SIGTERM (SIGKILL if that does not work), then kill any execution
environment of that server that outlived it, by pid, so one broken test cannot leak
processes into the next.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
from botocore.config import Config

REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/faas-test"
ARN_PREFIX = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 45.0
# Put in every server's environment; an execution environment must never see it.
SERVER_CANARY = "TESTS_SERVER_ONLY_CANARY"
_LISTENING = re.compile(r"faas listening on (http://(\S+):(\d+))\s*$")


class ServerStartError(RuntimeError):
    """`faas serve` exited or stayed silent instead of reporting its address."""


class FaasServer:
    """One `faas serve` subprocess on a data directory; restartable on the same directory.

    Attributes:
        data_dir: the ``--data-dir`` given to every incarnation.
        process: the current (or last) ``subprocess.Popen``.
        url: ``http://HOST:PORT`` read back from the current incarnation's stdout.
        returncodes: exit statuses of the incarnations that ended, in order.
    """

    def __init__(self, data_dir: Path, log_path: Path, settings: Mapping[str, Any]) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.settings = dict(settings)
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.host = ""
        self.port = 0
        self.returncodes: list[int] = []
        self.stdout_lines: list[str] = []
        self._reader: threading.Thread | None = None
        self._descendants: dict[int, psutil.Process] = {}
        self._finished = True

    # -- lifecycle ---------------------------------------------------------------------

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "faas", "serve", "--port", "0"]
        argv += ["--data-dir", str(self.data_dir)]
        for name, value in self.settings.items():
            argv += ["--" + name.replace("_", "-"), str(value)]
        return argv

    def start(self) -> FaasServer:
        """Start an incarnation and wait for its ``faas listening on`` line."""
        if self.is_running:
            raise RuntimeError("server is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
        env["PYTHONUNBUFFERED"] = "1"
        env[SERVER_CANARY] = "server-only"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {' '.join(self.argv())}\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        self.process = process
        self._finished = False
        ready = threading.Event()
        found: list[re.Match[str]] = []
        self._reader = threading.Thread(
            target=self._read_stdout, args=(process, ready, found), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                self._reap_failed_start(process)
                raise ServerStartError(
                    f"faas serve did not report its address (exit {process.returncode}):\n"
                    + self.log_tail()
                )
        if not found:
            self._reap_failed_start(process)
            raise ServerStartError("faas serve closed stdout before listening:\n" + self.log_tail())
        match = found[0]
        self.url, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        return self

    def _read_stdout(
        self, process: subprocess.Popen[str], ready: threading.Event, found: list[re.Match[str]]
    ) -> None:
        assert process.stdout is not None
        for line in process.stdout:  # keeps draining after the address so the pipe never fills
            self.stdout_lines.append(line)
            match = _LISTENING.search(line)
            if match and not found:
                found.append(match)
                ready.set()
        ready.set()

    def _reap_failed_start(self, process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        self._finish_incarnation()

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _remember_descendants(self) -> None:
        """Note the server's children so teardown can make sure none outlives it."""
        if not self.is_running:
            return
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            self._descendants[child.pid] = child

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the server and wait for it; returns its exit status.

        Raises:
            AssertionError: it did not exit within ``timeout_s`` (it is then SIGKILLed).
        """
        assert self.process is not None, "server was never started"
        if self.process.poll() is None:
            self._remember_descendants()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                self._finish_incarnation()
                raise AssertionError(
                    f"faas serve did not exit within {timeout_s}s of SIGTERM"
                ) from None
        return self._finish_incarnation()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server process only."""
        assert self.process is not None
        self._remember_descendants()
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        """Wait for the server to exit on its own; returns its exit status."""
        assert self.process is not None
        self.process.wait(timeout_s)
        return self._finish_incarnation()

    def kill(self) -> int:
        """SIGKILL the server (never its environments) and reap it; returns its status."""
        assert self.process is not None, "server was never started"
        if self.process.poll() is None:
            self._remember_descendants()
            self.process.kill()
            self.process.wait(10)
        return self._finish_incarnation()

    def _finish_incarnation(self) -> int:
        assert self.process is not None
        returncode = self.process.returncode
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None
        if self.process.stdout is not None:
            self.process.stdout.close()
        if not self._finished:
            self._finished = True
            self.returncodes.append(returncode)
        self.url = ""
        return returncode

    def restart(self, kill: bool = False) -> int:
        """Stop (SIGTERM, or SIGKILL if ``kill``) and start again on the same data dir.

        Returns:
            the exit status of the incarnation that ended.
        """
        returncode = self.kill() if kill else self.stop()
        self.start()
        return returncode

    def close(self) -> None:
        """Teardown: stop whatever runs, then kill environments that outlived the server."""
        if self.is_running:
            try:
                self.stop()
            except AssertionError:
                pass  # already SIGKILLed; the leftovers are handled below
        for child in self._descendants.values():
            try:
                if child.is_running():
                    child.kill()
            except psutil.NoSuchProcess:
                pass
        self._descendants.clear()

    # -- conveniences ------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self, **config: Any) -> Any:
        return lambda_client(self, **config)

    def __repr__(self) -> str:
        return f"FaasServer({self.url or 'stopped'}, data_dir={self.data_dir})"


class ServerFactory:
    """``make_server(**settings)``: start servers; close every one of them at teardown.

    Settings are ``faas serve`` flags by setting name, e.g. ``idle_timeout_s=1`` becomes
    ``--idle-timeout-s 1``. ``data_dir`` reuses a directory (otherwise a fresh one).
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._servers: list[FaasServer] = []

    def __call__(self, data_dir: Path | None = None, **settings: Any) -> FaasServer:
        index = len(self._servers)
        if data_dir is None:
            data_dir = self._root / f"server{index}" / "data"
        log_path = self._root / f"server{index}.log"
        server = FaasServer(data_dir, log_path, settings)
        self._servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in reversed(self._servers):
            server.close()
        self._servers.clear()


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """A factory of servers that live for one test."""
    factory = ServerFactory(tmp_path_factory.mktemp("faas"))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """A factory of servers shared by the tests of one module."""
    factory = ServerFactory(tmp_path_factory.mktemp("faas-module"))
    yield factory
    factory.close()


# -- helpers -------------------------------------------------------------------------------


def lambda_client(server: FaasServer, max_pool_connections: int = 10, **config: Any) -> Any:
    """A boto3 Lambda client for ``server``: one attempt, a 120 s read timeout.

    Each call uses its own botocore session, so clients can be made from any thread.
    """
    session = boto3.session.Session()
    return session.client(
        "lambda",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=120,
            connect_timeout=10,
            max_pool_connections=max_pool_connections,
            **config,
        ),
    )


def make_zip(files: Mapping[str, str | bytes | tuple[str | bytes, int]]) -> bytes:
    """A deployment zip, built in memory, of ``{name: source}`` or ``{name: (source, mode)}``
    (a mode such as 0o755 makes an executable ``bootstrap`` or extension)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, entry in files.items():
            content, mode = entry if isinstance(entry, tuple) else (entry, 0o644)
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def code_sha256(zip_bytes: bytes) -> str:
    """CodeSha256 as Lambda reports it: base64 of the raw SHA-256 digest."""
    import base64

    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


def create_function(
    client: Any,
    name: str,
    source: str | Mapping[str, str | bytes],
    handler: str = "app.handler",
    runtime: str = "python3.12",
    **members: Any,
) -> dict[str, Any]:
    """CreateFunction with ``source`` as ``app.py`` (or a dict of files); returns the config."""
    files = {"app.py": source} if isinstance(source, str) else source
    response: dict[str, Any] = client.create_function(
        FunctionName=name,
        Runtime=runtime,
        Role=ROLE,
        Handler=handler,
        Code={"ZipFile": make_zip(files)},
        **members,
    )
    return response


def invoke_json(
    client: Any, name: str, event: Any = None, **members: Any
) -> tuple[dict[str, Any], Any]:
    """Invoke with a JSON event; returns the response and the decoded JSON payload."""
    import json

    payload = b"{}" if event is None else json.dumps(event).encode()
    response = client.invoke(FunctionName=name, Payload=payload, **members)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def wait_until(
    condition: Callable[[], Any], timeout_s: float, interval_s: float = 0.05, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(interval_s)


def process_is_gone(process: psutil.Process) -> bool:
    """True once ``process`` (identified by pid and start time) no longer runs."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def capture_process(pid: int) -> psutil.Process:
    """A handle on a live pid that stays valid if the pid is later reused."""
    return psutil.Process(pid)
