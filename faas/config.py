"""The one typed, frozen configuration object, built from defaults, environment and flags.

Design notes: every setting is declared once in ``SETTINGS`` with its section, type,
default and help text. The CLI flags, the ``FAAS_*`` environment variables and the
README's configuration table are all derived from that list, so they cannot drift.
Loading never exits and never starts anything; a bad value raises ``ConfigError``
naming the setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The front door: where it listens, who it pretends to be, and payload limits."""

    host: str = "127.0.0.1"
    port: int = 9000
    region: str = "us-east-1"
    account_id: str = "000000000000"
    sync_payload_max_bytes: int = 6 * 1024 * 1024
    event_payload_max_bytes: int = 1024 * 1024
    shutdown_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Warm execution environments: how long they idle and how many may run."""

    idle_timeout_s: float = 600.0
    init_timeout_s: float = 10.0
    shutdown_grace_s: float = 2.0
    account_concurrency: int = 1000
    # The sum of MemorySize over live environments never exceeds this; 0 = 3/4 of host RAM.
    memory_budget_mb: int = 0
    # New environments per function: a token bucket of this many, refilled over the window.
    burst_environments: int = 1000
    burst_window_s: float = 10.0
    # Environments in their Init phase at once, node-wide; 0 = 4 per CPU core.
    max_concurrent_inits: int = 0
    # "fixed": idle environments stay idle_timeout_s; "adaptive": the hybrid histogram
    # policy learns each version's idle times, releases at once and pre-warms in time.
    keep_alive_policy: str = "fixed"
    keep_alive_bin_s: float = 60.0
    keep_alive_bins: int = 240
    # How long an invoke waits for an environment (being created, or freed) before a 429.
    scale_wait_s: float = 10.0
    max_log_bytes_per_invoke: int = 1024 * 1024
    max_response_bytes: int = 6 * 1024 * 1024 + 100
    # "native": python3.x functions use the msgpack frame socket; "runtime-api": the HTTP
    # Runtime API every other runtime uses (same behaviour, slower; for conformance checks).
    python_transport: str = "native"


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How environments are isolated from the node and from each other."""

    # Environments drop to this user when the node runs as root and the user can reach
    # the interpreter and the code ("" keeps the node's user).
    run_as_user: str = "nobody"
    # Native Python environments are forked from a zygote (a runtime with its modules
    # imported) instead of exec'ing a fresh interpreter; False always execs.
    zygote: bool = True
    # Zygote children kept parked in their own cgroups, ready to become environments.
    spare_environments: int = 4


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The embedded store: registry, code and event queue under one directory."""

    data_dir: Path = Path(".faas")
    max_zip_bytes: int = 50 * 1024 * 1024
    max_unzipped_bytes: int = 250 * 1024 * 1024
    max_zip_entries: int = 20_000


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """Asynchronous invocation, event source mappings and schedules."""

    dispatch_concurrency: int = 32
    poll_interval_s: float = 1.0
    retry_delays_s: tuple[float, ...] = (60.0, 120.0)
    max_event_age_s: float = 21600.0
    # Throttles and node-side faults: exponential backoff between these bounds.
    throttle_backoff_min_s: float = 1.0
    throttle_backoff_max_s: float = 300.0
    # Where SQS ARNs (mapping sources, dead-letter and destination targets) are reached;
    # empty: boto3's own endpoint resolution.
    sqs_endpoint_url: str = ""
    # Empty: the event queue lives in the embedded SQLite store; postgresql://...: shared.
    event_queue_url: str = ""
    # Backoff bounds of a mapping's poller while its broker is unreachable.
    poller_backoff_min_s: float = 0.5
    poller_backoff_max_s: float = 30.0
    # How often the scheduler checks for due rules.
    schedule_tick_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a faas node needs to know, in one frozen tree."""

    api: ApiConfig = field(default_factory=ApiConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    events: EventsConfig = field(default_factory=EventsConfig)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _float_tuple(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _event_queue_url(text: str) -> str:
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected a postgresql:// URL (or empty for the embedded queue)")
    return text


@dataclass(frozen=True, slots=True)
class Setting:
    """One declared setting: where it lives in Config and how to read it from text."""

    section: str
    name: str
    parse: Callable[[str], Any]
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env_var(self) -> str:
        return f"FAAS_{self.name.upper()}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default(self) -> Any:
        return getattr(getattr(Config(), self.section), self.name)


SETTINGS: tuple[Setting, ...] = (
    Setting("api", "host", str, "address to listen on"),
    Setting("api", "port", int, "port to listen on (0 picks a free one)", 0),
    Setting("api", "region", str, "region used in ARNs and AWS_REGION"),
    Setting("api", "account_id", str, "account id used in ARNs"),
    Setting("api", "sync_payload_max_bytes", int, "largest RequestResponse payload", 1),
    Setting("api", "event_payload_max_bytes", int, "largest Event payload", 1),
    Setting("api", "shutdown_timeout_s", float, "grace for in-flight invokes at stop", 0),
    Setting("pool", "idle_timeout_s", float, "keep-alive of an idle warm environment", 0),
    Setting("pool", "init_timeout_s", float, "limit on an environment's Init phase", 0.1),
    Setting("pool", "shutdown_grace_s", float, "SIGTERM-to-SIGKILL grace at shutdown", 0),
    Setting("pool", "account_concurrency", int, "concurrent executions for the account", 1),
    Setting("pool", "memory_budget_mb", int, "MemorySize sum of live environments (0: 3/4 RAM)", 0),
    Setting("pool", "burst_environments", int, "new environments per function per window", 1),
    Setting("pool", "burst_window_s", float, "refill window of the burst allowance", 0.001),
    Setting("pool", "max_concurrent_inits", int, "environments in Init at once (0: 4 per core)", 0),
    Setting(
        "pool",
        "keep_alive_policy",
        str,
        "idle environments: fixed or adaptive keep-alive",
        choices=("fixed", "adaptive"),
    ),
    Setting("pool", "keep_alive_bin_s", float, "adaptive keep-alive: histogram bin width", 0.01),
    Setting("pool", "keep_alive_bins", int, "adaptive keep-alive: histogram bins (range)", 2),
    Setting("pool", "scale_wait_s", float, "wait for a free environment before a 429", 0),
    Setting("pool", "max_log_bytes_per_invoke", int, "log bytes kept per invocation", 4096),
    Setting(
        "pool",
        "python_transport",
        str,
        "how python3.x runtimes reach the node",
        choices=("native", "runtime-api"),
    ),
    Setting("sandbox", "run_as_user", str, "unprivileged user environments run as, if root"),
    Setting("sandbox", "zygote", _bool, "fork Python environments from a zygote (else exec)"),
    Setting("sandbox", "spare_environments", int, "zygote children parked ready in cgroups", 0),
    Setting("store", "data_dir", Path, "directory of the embedded store"),
    Setting("store", "max_zip_bytes", int, "largest deployment zip", 1),
    Setting("store", "max_unzipped_bytes", int, "largest unpacked code size", 1),
    Setting("events", "dispatch_concurrency", int, "Event invokes run at once", 1),
    Setting("events", "retry_delays_s", _float_tuple, "waits before retries of a failed event"),
    Setting("events", "max_event_age_s", float, "age after which an event is dropped", 1),
    Setting("events", "throttle_backoff_min_s", float, "first wait after a throttled event", 0),
    Setting("events", "throttle_backoff_max_s", float, "longest wait after a throttled event", 0),
    Setting("events", "sqs_endpoint_url", str, "endpoint for SQS ARNs (empty: AWS's own)"),
    Setting("events", "event_queue_url", _event_queue_url, "postgresql:// URL of a shared queue"),
    Setting("events", "poller_backoff_min_s", float, "first reconnect wait of a poller", 0),
    Setting("events", "poller_backoff_max_s", float, "longest reconnect wait of a poller", 0),
    Setting("events", "schedule_tick_s", float, "how often schedules are checked", 0.01),
)


def load_config(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config: defaults, then ``FAAS_*`` variables, then explicit overrides.

    Args:
        environ: the environment to read ``FAAS_*`` settings from (empty if None).
        overrides: values by setting name (already typed or text), e.g. from CLI flags;
            ``None`` values are ignored.

    Raises:
        ConfigError: a value does not parse or is out of range.
    """
    environ = environ or {}
    overrides = overrides or {}
    sections: dict[str, dict[str, Any]] = {
        "api": {}, "pool": {}, "sandbox": {}, "store": {}, "events": {}
    }  # fmt: skip
    for setting in SETTINGS:
        raw: Any = environ.get(setting.env_var)
        if overrides.get(setting.name) is not None:
            raw = overrides[setting.name]
        if raw is None:
            continue
        value = _parse(setting, raw)
        sections[setting.section][setting.name] = value
    base = Config()
    return Config(
        api=dataclasses.replace(base.api, **sections["api"]),
        pool=dataclasses.replace(base.pool, **sections["pool"]),
        sandbox=dataclasses.replace(base.sandbox, **sections["sandbox"]),
        store=dataclasses.replace(base.store, **sections["store"]),
        events=dataclasses.replace(base.events, **sections["events"]),
    )


def _parse(setting: Setting, raw: Any) -> Any:
    try:
        value = setting.parse(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise ConfigError(f"{setting.env_var} / {setting.flag}: cannot use {raw!r}: {exc}") from exc
    if setting.choices and value not in setting.choices:
        raise ConfigError(
            f"{setting.env_var} / {setting.flag}: {value!r} is not one of "
            + ", ".join(setting.choices)
        )
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(
            f"{setting.env_var} / {setting.flag}: {value!r} is below the minimum {setting.minimum}"
        )
    return value


def settings_table() -> str:
    """The Markdown configuration table for the README."""
    lines = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        default = setting.default()
        if isinstance(default, tuple):
            default = ",".join(str(part) for part in default)
        lines.append(f"| `{setting.flag}` | `{setting.env_var}` | `{default}` | {setting.help} |")
    return "\n".join(lines)
