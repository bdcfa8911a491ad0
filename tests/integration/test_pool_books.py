"""A seeded random workout of the pool manager against a real server: its books stay true.

Several threads at once invoke four functions and pull every lever the control plane has
on the pool (configuration and code updates, reserved and provisioned concurrency, delete
and recreate, killing an environment's process), while a checker reads the pool's books
(GET /faas/v1/pool) every 100 ms. Each operation has an explicit list of allowed outcomes;
anything else fails the test. Afterwards the books must settle and agree with the
processes and cgroups that really exist, the handlers' own records must show no
environment ever ran two invocations at once, and stopping the server must leave nothing.

The seeds fix each thread's sequence of operations; the interleaving is the machine's.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError
from faas_support import (
    FaasServer,
    ServerFactory,
    create_function,
    lambda_client,
    make_zip,
    process_is_gone,
    wait_until,
)
from test_concurrency import books

pytestmark = pytest.mark.timeout(120)

SEEDS = [1729, 4242, 90210]
LOAD_S = 15.0  # per seed; with set-up, settling and stopping a seed takes ~17 s
INVOKERS = 5
CONTROLLERS = 2
MEMORY_BUDGET_MB = 768
IDLE_TIMEOUT_S = 2
SCALE_WAIT_S = 5
FUNCTION_TIMEOUT_S = 10
# Longest an invoke may take before it counts as a hang: its timeout, the wait for
# capacity, an Init, and slack for a loaded machine.
INVOKE_HANG_S = FUNCTION_TIMEOUT_S + SCALE_WAIT_S + 15
MAX_PROVISIONED_MB = 384  # keeps provisioned environments from starving on-demand ones
RUNTIME_MARK = "faas_python_runtime"  # in the command line of every Python runtime process
ZYGOTE_MARK = "faas_python_runtime.zygote"  # the zygote and its parked children
SPARE_PREFIX = "spare-"  # cgroups of spare environments, no environment's yet

REASON_RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
REASON_ACCOUNT = "ConcurrentInvocationLimitExceeded"

# Sleeps as asked, then appends when it ran to a file of its own environment: the key is
# an id drawn when the module is imported (once per environment) plus the process id.
HANDLER = """
import json
import os
import time
import uuid

MODULE_ID = uuid.uuid4().hex
CODE = __CODE__


def handler(event, context):
    start = time.monotonic()
    time.sleep(event.get("sleep", 0))
    end = time.monotonic()
    key = f"{MODULE_ID}-{os.getpid()}"
    record = {"rid": context.aws_request_id, "start": start, "end": end}
    with open(os.path.join(os.environ["RECORD_DIR"], key + ".jsonl"), "a") as out:
        out.write(json.dumps(record) + "\\n")
    return dict(record, key=key, pid=os.getpid(), gen=int(os.environ["GEN"]), code=CODE)
"""


def handler_zip(code: int) -> bytes:
    return make_zip({"app.py": HANDLER.replace("__CODE__", str(code))})


@dataclasses.dataclass(eq=False)  # identity: each object is one function
class Function:
    """What the test knows of one function; fields change under ``Workout.state_lock``."""

    name: str
    memory_mb: int
    gen: int  # GEN of $LATEST as of the last change that returned
    code: int  # CODE of $LATEST as of the last change that returned
    reserved: int | None = None
    reserve_changes: int = 0
    versions: dict[str, tuple[int, int, int]] = dataclasses.field(default_factory=dict)
    provisioned: dict[str, int] = dataclasses.field(default_factory=dict)  # version -> count
    epoch: int = 0  # odd while it is being deleted and created again
    kill_times: list[float] = dataclasses.field(default_factory=list)
    control: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Workout:
    """The shared state of one seeded run: the server, the model, outcomes and failures."""

    def __init__(self, server: FaasServer, seed: int, record_dir: Path) -> None:
        self.server = server
        self.seed = seed
        self.record_dir = record_dir
        self.state_lock = threading.Lock()
        self.failures: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.successes: list[dict[str, Any]] = []  # payloads of invokes that returned a result
        self.descendants: dict[tuple[int, float], psutil.Process] = {}
        self.node_cgroups: set[Path] = set()
        self.snapshots = 0
        self._serial = 0
        self.stop = threading.Event()
        self.functions: list[Function] = []

    def next_serial(self) -> int:
        with self.state_lock:
            self._serial += 1
            return self._serial

    def fail(self, message: str) -> None:
        with self.state_lock:
            self.failures.append(message)

    def count(self, outcome: str) -> None:
        with self.state_lock:
            self.outcomes[outcome] += 1

    def function(self, name: str) -> Function | None:
        return next((fn for fn in self.functions if fn.name == name), None)

    def environment_vars(self, gen: int) -> dict[str, Any]:
        return {"Variables": {"RECORD_DIR": str(self.record_dir), "GEN": str(gen)}}

    def create(self, client: Any, fn: Function) -> None:
        create_function(
            client,
            fn.name,
            HANDLER.replace("__CODE__", str(fn.code)),
            MemorySize=fn.memory_mb,
            Timeout=FUNCTION_TIMEOUT_S,
            Environment=self.environment_vars(fn.gen),
        )


# --- processes and cgroups -----------------------------------------------------------------


def server_descendants(server: FaasServer) -> list[psutil.Process]:
    try:
        return list(psutil.Process(server.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def is_runtime(process: psutil.Process) -> bool:
    """A runtime process: not the zygote, nor one of its children still parked in a spare
    environment (both show the zygote's command line until a child becomes a runtime)."""
    try:
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    if any(ZYGOTE_MARK in part for part in cmdline):
        return False
    return any(RUNTIME_MARK in part for part in cmdline)


def runtime_pids(server: FaasServer) -> set[int]:
    """Python runtime processes (the environments) under the server process."""
    return {process.pid for process in server_descendants(server) if is_runtime(process)}


def cgroup_mounts() -> list[Path]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.split()[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(before.split()[4]))
    return mounts


def node_cgroup_dirs(server: FaasServer) -> set[Path]:
    """The server's ``faas/<pid>-<suffix>`` directory in every cgroup hierarchy."""
    found = set()
    for mount in cgroup_mounts():
        found.update(path for path in (mount / "faas").glob(f"{server.pid}-*") if path.is_dir())
    return found


def cgroup_backend(server: FaasServer) -> str:
    match = re.search(r"cgroups: (\w+)", server.log_path.read_text(errors="replace"))
    assert match, "the server did not log its cgroup backend"
    return match.group(1)


# --- invariants of one snapshot of the books, during the load ------------------------------


class BooksChecker:
    """Invariants that hold for every snapshot, and across the sequence of snapshots."""

    def __init__(self, workout: Workout) -> None:
        self.workout = workout
        self.identity: dict[str, tuple[str, str, int]] = {}  # id -> function, version, MB
        self.pids: dict[str, int] = {}
        self.invocations: dict[str, int] = {}
        self.present: set[str] = set()
        self.gone: set[str] = set()

    def check(self, state: dict[str, Any]) -> list[str]:
        problems = []
        envs = state["environments"]
        ids = [env["id"] for env in envs]
        if len(ids) != len(set(ids)):
            problems.append(f"an environment is in the books twice: {sorted(ids)}")
        if state["committed_memory_mb"] > state["memory_budget_mb"]:
            problems.append(f"committed {state['committed_memory_mb']} MB over the budget")
        if state["committed_memory_mb"] != sum(env["memory_mb"] for env in envs):
            problems.append("committed_memory_mb is not the sum of the environments' MemorySize")
        if state["live"] != len(envs):
            problems.append(f"live={state['live']} but {len(envs)} environments are listed")
        for env in envs:
            if env["place"] == "unlisted":
                problems.append(f"live environment in no pool and not stopping: {env}")
        busy = sum(1 for env in envs if env["place"] == "busy")
        if busy > state["in_flight"]:
            problems.append(f"{busy} busy environments but in_flight={state['in_flight']}")
        if not 0 <= state["initializing"] <= state["max_concurrent_inits"]:
            problems.append(f"initializing={state['initializing']} out of bounds")
        starting = sum(
            1 for env in envs if env["place"] in ("busy", "provisioning", "stopping", "unlisted")
        )
        if state["initializing"] > starting:
            problems.append(f"initializing={state['initializing']} > {starting} that could be")
        if state["in_flight"] < 0 or state["waiting"] < 0:
            problems.append("negative in_flight or waiting")
        pids = [env["pid"] for env in envs if env["pid"] is not None]
        if len(pids) != len(set(pids)):
            problems.append(f"two live environments share a pid: {sorted(pids)}")
        now_present = set(ids)
        for env in envs:
            identity = (env["function"], env["version"], env["memory_mb"])
            if self.identity.setdefault(env["id"], identity) != identity:
                problems.append(f"environment {env['id']} changed from {self.identity[env['id']]}")
            if env["pid"] is not None and self.pids.setdefault(env["id"], env["pid"]) != env["pid"]:
                problems.append(f"environment {env['id']} changed its pid")
            if env["invocations"] < self.invocations.get(env["id"], 0):
                problems.append(f"environment {env['id']} lost invocations")
            self.invocations[env["id"]] = env["invocations"]
        back = now_present & self.gone
        if back:
            problems.append(f"environments came back after leaving the books: {back}")
        self.gone |= self.present - now_present
        self.present = now_present
        return problems


def checker_loop(workout: Workout, done: threading.Event) -> None:
    checker = BooksChecker(workout)
    server = workout.server
    while not done.wait(0.1):
        try:
            state = books(server)
        except Exception as exc:
            workout.fail(f"GET /faas/v1/pool failed: {exc!r}")
            continue
        workout.snapshots += 1
        for problem in checker.check(state):
            workout.fail(f"books: {problem}")
        for process in server_descendants(server):
            try:
                workout.descendants[(process.pid, process.create_time())] = process
            except psutil.NoSuchProcess:
                pass
        workout.node_cgroups |= node_cgroup_dirs(server)


# --- the invokers ------------------------------------------------------------------------------


def invoke_once(workout: Workout, client: Any, rng: random.Random) -> None:
    fn = rng.choice(workout.functions)
    event = {"sleep": rng.choice([0, 0, 0.01, 0.05, 0.1, 0.25])}
    with workout.state_lock:
        epoch, gen, code = fn.epoch, fn.gen, fn.code
        reserved, reserve_changes = fn.reserved, fn.reserve_changes
        qualifier = None
        if fn.versions and rng.random() < 0.3:
            qualifier = rng.choice(sorted(fn.versions))
        published = fn.versions.get(qualifier) if qualifier else None
    members = {"Qualifier": qualifier} if qualifier else {}
    started = time.monotonic()
    try:
        response = client.invoke(FunctionName=fn.name, Payload=json.dumps(event), **members)
        body = response["Payload"].read()
        error: ClientError | None = None
    except ClientError as exc:
        error = exc
    except Exception as exc:  # a timeout, a dropped connection: never allowed
        workout.fail(f"invoke {fn.name} {members}: {exc!r}")
        return
    ended = time.monotonic()
    what = f"invoke {fn.name}{':' + qualifier if qualifier else ''}"
    if ended - started > INVOKE_HANG_S:
        workout.fail(f"{what} took {ended - started:.1f}s")
    with workout.state_lock:
        epoch_after, reserved_after = fn.epoch, fn.reserved
        # Changes count twice (before the call and once it returned): an odd count at the
        # start means one was in flight, already applied by the node or not.
        reserve_changed = fn.reserve_changes != reserve_changes or reserve_changes % 2 == 1
        recently_killed = any(started - 5 <= t <= ended for t in fn.kill_times)
    deleted_meanwhile = epoch % 2 == 1 or epoch_after != epoch

    if error is not None:
        code_ = error.response["Error"]["Code"]
        reason = error.response.get("Reason")
        message = error.response.get("message") or error.response["Error"].get("Message", "")
        if (
            code_ == "TooManyRequestsException"
            and reason == REASON_RESERVED
            and (reserved is not None or reserved_after is not None or reserve_changed)
        ):
            workout.count("invoke: 429 reserved concurrency")
        elif (
            code_ == "TooManyRequestsException"
            and reason == REASON_ACCOUNT
            and "memory budget" in message
        ):
            workout.count("invoke: 429 memory budget")  # the budget is tight on purpose
        elif code_ == "ResourceNotFoundException" and deleted_meanwhile:
            workout.count("invoke: 404 while deleted")
        else:
            workout.fail(f"{what}: {code_} {reason} {message!r} (reserved {reserved})")
        return

    payload = json.loads(body)
    if response.get("FunctionError"):
        if (
            response["FunctionError"] == "Unhandled"
            and payload.get("errorType") == "Runtime.ExitError"
            and "signal: killed" in payload.get("errorMessage", "")
            and recently_killed
        ):
            workout.count("invoke: killed environment")
        else:
            workout.fail(f"{what}: function error {payload} (killed lately: {recently_killed})")
        return
    problems = []
    if payload["rid"] != response["ResponseMetadata"]["RequestId"]:
        problems.append("ran under another request id")
    if qualifier is None:
        # A change that returned before this invoke started is what it must run.
        if payload["gen"] < gen or payload["code"] < code:
            problems.append(f"ran stale $LATEST (gen {gen}, code {code} or later expected)")
        if response.get("ExecutedVersion") != "$LATEST":
            problems.append(f"executed version {response.get('ExecutedVersion')}")
    elif not deleted_meanwhile:
        assert published is not None
        if (payload["gen"], payload["code"]) != published[:2]:
            problems.append(f"version {qualifier} ran {payload} instead of {published}")
        if response.get("ExecutedVersion") != qualifier:
            problems.append(f"executed version {response.get('ExecutedVersion')}")
    if problems:
        workout.fail(f"{what}: {'; '.join(problems)}: {payload}")
        return
    with workout.state_lock:
        workout.successes.append(payload)
    workout.count("invoke: ok")


def invoker_loop(workout: Workout, index: int, deadline: float) -> None:
    rng = random.Random(f"{workout.seed}-invoker-{index}")
    client = lambda_client(workout.server)
    try:
        while time.monotonic() < deadline and not workout.stop.is_set():
            invoke_once(workout, client, rng)
    except Exception as exc:
        workout.fail(f"invoker {index} crashed: {exc!r}")


# --- the control plane ---------------------------------------------------------------------


def expect_error(workout: Workout, what: str, call: Callable[[], Any], code: str) -> None:
    try:
        call()
    except ClientError as exc:
        if exc.response["Error"]["Code"] == code:
            workout.count(f"{what}: {code}")
            return
        workout.fail(f"{what}: {exc.response['Error']} instead of {code}")
        return
    workout.fail(f"{what}: succeeded instead of {code}")


def op_update_configuration(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    gen, memory = workout.next_serial(), rng.choice([128, 256])
    config = client.update_function_configuration(
        FunctionName=fn.name, Environment=workout.environment_vars(gen), MemorySize=memory
    )
    assert config["MemorySize"] == memory
    with workout.state_lock:
        fn.gen, fn.memory_mb = gen, memory
    return "UpdateFunctionConfiguration"


def op_update_code(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    code = workout.next_serial()
    client.update_function_code(FunctionName=fn.name, ZipFile=handler_zip(code))
    with workout.state_lock:
        fn.code = code
    return "UpdateFunctionCode"


def op_put_reserved(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    value = rng.choice([0, 0, 1, 2, 3, 10])
    provisioned = sum(fn.provisioned.values())
    what = f"PutFunctionConcurrency({value})"
    call = lambda: client.put_function_concurrency(  # noqa: E731
        FunctionName=fn.name, ReservedConcurrentExecutions=value
    )
    if value < provisioned:
        expect_error(workout, what, call, "InvalidParameterValueException")
        return what + " below provisioned"
    with workout.state_lock:
        fn.reserve_changes += 1  # from now on invokes may see either value
    assert call()["ReservedConcurrentExecutions"] == value
    with workout.state_lock:
        fn.reserved = value
        fn.reserve_changes += 1
    return what


def op_delete_reserved(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    with workout.state_lock:
        fn.reserve_changes += 1
    client.delete_function_concurrency(FunctionName=fn.name)
    with workout.state_lock:
        fn.reserved = None
        fn.reserve_changes += 1
    return "DeleteFunctionConcurrency"


def op_provision(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    version = client.publish_version(FunctionName=fn.name)["Version"]
    with workout.state_lock:
        fn.versions.setdefault(version, (fn.gen, fn.code, fn.memory_mb))
    count = rng.choice([1, 2])
    others = sum(n for v, n in fn.provisioned.items() if v != version)
    with workout.state_lock:
        provisioned_mb = sum(
            n * other.versions[v][2]
            for other in workout.functions
            for v, n in other.provisioned.items()
            if other is not fn or v != version
        )
    if provisioned_mb + count * fn.versions[version][2] > MAX_PROVISIONED_MB:
        return "PublishVersion (provisioning skipped: enough provisioned)"
    what = f"PutProvisionedConcurrencyConfig({count})"
    call = lambda: client.put_provisioned_concurrency_config(  # noqa: E731
        FunctionName=fn.name, Qualifier=version, ProvisionedConcurrentExecutions=count
    )
    if fn.reserved is not None and others + count > fn.reserved:
        expect_error(workout, what, call, "InvalidParameterValueException")
        return what + " over reserved"
    put = call()
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == count
    assert put["Status"] in ("IN_PROGRESS", "READY"), put
    with workout.state_lock:
        fn.provisioned[version] = count
    return what


def op_unprovision(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    if not fn.provisioned:
        return "DeleteProvisionedConcurrencyConfig (none to delete)"
    version = rng.choice(sorted(fn.provisioned))
    client.delete_provisioned_concurrency_config(FunctionName=fn.name, Qualifier=version)
    with workout.state_lock:
        del fn.provisioned[version]
    return "DeleteProvisionedConcurrencyConfig"


def op_recreate(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    with workout.state_lock:
        fn.epoch += 1
        fn.versions.clear()
        fn.provisioned.clear()
        fn.reserve_changes += 1
    client.delete_function(FunctionName=fn.name)
    gen, code = workout.next_serial(), workout.next_serial()
    with workout.state_lock:
        fn.gen, fn.code, fn.reserved = gen, code, None
    workout.create(client, fn)
    with workout.state_lock:
        fn.epoch += 1
        fn.reserve_changes += 1
    return "DeleteFunction + CreateFunction"


def op_kill(workout: Workout, client: Any, fn: Function, rng: random.Random) -> str:
    """SIGKILL the process group of a random environment from the books."""
    server = workout.server
    candidates = [
        env for env in books(server)["environments"]
        if env["pid"] is not None and env["place"] in ("idle", "provisioned_idle", "busy")
    ]  # fmt: skip
    if not candidates:
        return "kill (no environment)"
    victim = rng.choice(candidates)
    pid = victim["pid"]
    # Only ever a runtime process of this server, never a reused pid.
    ours = {process.pid: process for process in server_descendants(server)}
    if pid not in ours or not is_runtime(ours[pid]):
        return "kill (environment already gone)"
    owner = workout.function(victim["function"])
    assert owner is not None
    with workout.state_lock:
        owner.kill_times.append(time.monotonic())
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "kill (environment already gone)"
    return f"kill ({victim['place']})"


OPERATIONS = [
    op_update_configuration,
    op_update_code,
    op_put_reserved,
    op_delete_reserved,
    op_provision,
    op_unprovision,
    op_recreate,
    op_kill,
]
WEIGHTS = [3, 2, 3, 2, 2, 2, 1, 4]


def controller_loop(workout: Workout, index: int, deadline: float) -> None:
    rng = random.Random(f"{workout.seed}-controller-{index}")
    client = lambda_client(workout.server)
    # The first controller pulls every lever once early on, so each seed covers them all.
    queue = rng.sample(OPERATIONS, len(OPERATIONS)) if index == 0 else []
    while time.monotonic() < deadline and not workout.stop.is_set():
        operation = queue.pop(0) if queue else rng.choices(OPERATIONS, WEIGHTS)[0]
        fn = rng.choice(workout.functions)
        if operation is op_unprovision:  # prefer a function that has something to release
            with workout.state_lock:
                fn = rng.choice([f for f in workout.functions if f.provisioned] or [fn])
        try:
            with fn.control:
                outcome = operation(workout, client, fn, rng)
            workout.count(outcome)
        except ClientError as exc:
            workout.fail(f"{operation.__name__} on {fn.name}: {exc.response['Error']}")
        except Exception as exc:
            workout.fail(f"{operation.__name__} on {fn.name}: {exc!r}")
        time.sleep(rng.uniform(0.1, 0.6))  # slow enough for warm environments to be reused


# --- after the load --------------------------------------------------------------------------


def is_settled(state: dict[str, Any]) -> bool:
    places = {env["place"] for env in state["environments"]}
    quiet = state["in_flight"] == 0 and state["waiting"] == 0 and state["initializing"] == 0
    return quiet and places <= {"idle", "provisioned_idle"}


def _signature(state: dict[str, Any]) -> Any:
    return (
        sorted((env["id"], env["place"], env["pid"]) for env in state["environments"]),
        state["live"], state["in_flight"], state["committed_memory_mb"],
    )  # fmt: skip


def settled_problems(workout: Workout, uses_cgroups: bool) -> list[str] | None:
    """What is wrong with the settled books, compared with the processes and cgroups that
    exist; None if the books changed while looking (try again)."""
    server = workout.server
    before = books(server)
    runtimes = runtime_pids(server)
    cgroups = {node: {p.name for p in node.iterdir()
                      if p.is_dir() and not p.name.startswith(SPARE_PREFIX)}
               for node in workout.node_cgroups}  # fmt: skip
    after = books(server)
    if _signature(before) != _signature(after):
        return None
    problems = []
    envs = after["environments"]
    for key in ("in_flight", "waiting", "initializing"):
        if after[key]:
            problems.append(f"{key}={after[key]} after the load stopped")
    if after["committed_memory_mb"] != sum(env["memory_mb"] for env in envs):
        problems.append("committed_memory_mb is not the sum over live environments")
    booked = {env["pid"] for env in envs}
    for env in envs:
        try:
            alive = (
                env["pid"] is not None
                and psutil.Process(env["pid"]).status() != psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            alive = False
        if not alive or env["pid"] not in runtimes:
            problems.append(f"booked environment is not a running runtime process: {env}")
    untracked = runtimes - booked
    if untracked:
        problems.append(f"runtime processes the books lost track of: {sorted(untracked)}")
    if uses_cgroups:
        ids = {env["id"] for env in envs}
        for node, children in cgroups.items():
            if children != ids:
                problems.append(
                    f"cgroups under {node} {sorted(children)} are not the books' {sorted(ids)}"
                )
    return problems


def check_records(workout: Workout) -> int:
    """No environment ran two invocations at once; each invocation ran once; each result
    returned to a client was recorded by the environment that reported it."""
    intervals: dict[str, list[tuple[float, float, str]]] = {}
    for path in workout.record_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            intervals.setdefault(path.stem, []).append(
                (record["start"], record["end"], record["rid"])
            )
    seen_rids: set[str] = set()
    for key, runs in intervals.items():
        runs.sort()
        for (_, end, rid), (start, _, next_rid) in itertools.pairwise(runs):
            assert start >= end, f"environment {key} ran {rid} and {next_rid} at once"
        rids = {rid for _, _, rid in runs}
        assert not rids & seen_rids, f"an invocation ran twice: {rids & seen_rids}"
        seen_rids |= rids
    for payload in workout.successes:
        recorded = (payload["start"], payload["end"], payload["rid"])
        assert recorded in intervals.get(payload["key"], []), f"unrecorded result {payload}"
    return len(intervals)


@pytest.mark.parametrize("seed", SEEDS)
def test_pool_books_stay_true_under_random_load(
    make_server: ServerFactory, tmp_path: Path, seed: int
) -> None:
    server = make_server(
        memory_budget_mb=MEMORY_BUDGET_MB, idle_timeout_s=IDLE_TIMEOUT_S, scale_wait_s=SCALE_WAIT_S
    )
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    workout = Workout(server, seed, record_dir)
    client = lambda_client(server)
    for index, memory in enumerate([128, 128, 256, 256]):
        fn = Function(f"books-{index}", memory, workout.next_serial(), workout.next_serial())
        workout.functions.append(fn)
        workout.create(client, fn)

    checker_done = threading.Event()
    checker = threading.Thread(target=checker_loop, args=(workout, checker_done), daemon=True)
    checker.start()
    deadline = time.monotonic() + LOAD_S
    threads = [
        threading.Thread(target=invoker_loop, args=(workout, i, deadline), daemon=True)
        for i in range(INVOKERS)
    ] + [
        threading.Thread(target=controller_loop, args=(workout, i, deadline), daemon=True)
        for i in range(CONTROLLERS)
    ]
    for thread in threads:
        thread.start()
    join_by = deadline + INVOKE_HANG_S + 5
    for thread in threads:
        thread.join(max(0.0, join_by - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    workout.stop.set()
    checker_done.set()
    checker.join(10)
    summary = f"seed {seed}: {dict(sorted(workout.outcomes.items()))}"
    assert not hung, f"threads still running an operation: {hung}; {summary}"
    assert not workout.failures, "\n".join([summary, *workout.failures[:25]])

    # The run did what it set out to do.
    assert workout.outcomes["invoke: ok"] >= 50, summary
    assert workout.snapshots >= 50, summary
    for operation in OPERATIONS:
        ran = operation.__name__
        assert any(o for o in workout.outcomes if _operation_of(o) == ran), f"{ran}: {summary}"
    kills = sum(n for o, n in workout.outcomes.items() if re.fullmatch(r"kill \(\w+\)", o))
    assert kills, f"no environment was killed: {summary}"

    # (b) Once the load has stopped the books settle, and agree with the processes.
    seen: list[dict[str, Any]] = []

    def settled() -> bool:
        seen[:] = [books(server)]
        return is_settled(seen[0])

    try:
        wait_until(settled, 30, interval_s=0.1, what="the books to settle")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}; {summary}") from None
    backend = cgroup_backend(server)
    uses_cgroups = backend != "none"
    if uses_cgroups:
        assert workout.node_cgroups, f"cgroups: {backend}, but no faas/{server.pid}-* directory"
    problems: list[str] = []

    def agree() -> bool:
        problems[:] = settled_problems(workout, uses_cgroups)
        return not problems

    try:
        wait_until(agree, 15, interval_s=0.2, what="the settled books to agree with the host")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {problems}") from None

    # (c) What the handlers recorded.
    environments = check_records(workout)
    assert environments >= 4

    # (d) Stopping the server leaves no process and no cgroup behind.
    for process in server_descendants(server):
        workout.descendants[(process.pid, process.create_time())] = process
    assert server.stop() == 0
    wait_until(
        lambda: all(process_is_gone(p) for p in workout.descendants.values()),
        3,
        what="every process of the server to be gone",
    )
    left = [path for path in workout.node_cgroups if path.exists()]
    assert not left, f"cgroups left behind: {left}"
    print(summary, f"environments: {environments}, snapshots: {workout.snapshots}")


_OUTCOME_OPERATION = {
    "UpdateFunctionConfiguration": "op_update_configuration",
    "UpdateFunctionCode": "op_update_code",
    "PutFunctionConcurrency": "op_put_reserved",
    "DeleteFunctionConcurrency": "op_delete_reserved",
    "PublishVersion": "op_provision",
    "PutProvisionedConcurrencyConfig": "op_provision",
    "DeleteProvisionedConcurrencyConfig": "op_unprovision",
    "DeleteFunction + CreateFunction": "op_recreate",
    "kill": "op_kill",
}


def _operation_of(outcome: str) -> str | None:
    for prefix, operation in _OUTCOME_OPERATION.items():
        if outcome.startswith(prefix):
            return operation
    return None


# --- a retirement while an invoke waits for room: its environment stays in the books -------

SLEEPER = "import time\n\ndef handler(event, context):\n    time.sleep(event['seconds'])\n"


def test_an_environment_created_for_a_retired_pool_is_listed(make_server: ServerFactory) -> None:
    server = make_server(memory_budget_mb=256, scale_wait_s=10)
    client = lambda_client(server)
    create_function(client, "hog", SLEEPER, MemorySize=256, Timeout=30)
    create_function(client, "patient", SLEEPER, MemorySize=256, Timeout=30)
    holder = threading.Thread(
        target=lambda: lambda_client(server).invoke(FunctionName="hog", Payload=b'{"seconds": 2}')
    )
    holder.start()
    wait_until(lambda: books(server)["in_flight"] == 1, 20, what="the budget in use")
    result: list[Any] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            lambda_client(server).invoke(FunctionName="patient", Payload=b'{"seconds": 1}')
        )
    )
    waiter.start()
    wait_until(lambda: books(server)["waiting"] == 1, 20, what="an invoke waiting for memory")
    # Retires patient's $LATEST pool while its invoke waits for room.
    client.update_function_configuration(FunctionName="patient", Description="changed")
    places = set()
    while waiter.is_alive():
        places |= {env["place"] for env in books(server)["environments"]
                   if env["function"] == "patient"}  # fmt: skip
        time.sleep(0.02)
    holder.join(30)
    assert result and result[0]["StatusCode"] == 200 and "FunctionError" not in result[0]
    assert "busy" in places and "unlisted" not in places, places
