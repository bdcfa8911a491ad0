"""Traffic shifting: move an alias from its version to a target version step by step,
watching the target's error rate (and optional hook functions), rolling back at once
when it goes wrong.

Design notes: a deployment is a record in the store, saved before every change it
makes to the alias, so after a crash the node knows exactly where the alias stands;
on start it resumes every deployment still in progress from its recorded step.
Shifting is done with the same alias updates a user makes (``VersionCatalog``), so
invocations see either the old weights or the new ones. Preferences follow CodeDeploy's
names; a custom one (percent, interval in seconds) makes tests fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import orjson

from faas.errors import InvalidParameterValueException, ResourceNotFoundException
from faas.models import LATEST, InvocationRequest
from faas.observe.metrics import VersionTally
from faas.store.base import DeploymentRegistry
from faas.versions import VersionCatalog

log = logging.getLogger(__name__)

_NAMED = re.compile(r"(Canary|Linear)(\d+)Percent(?:Every)?(\d+)Minutes?")
_CUSTOM = re.compile(r"(Canary|Linear):(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)")
_WATCH_TICK_S = 0.25


class DeploymentState(enum.StrEnum):
    IN_PROGRESS = "InProgress"  # shifting traffic
    SUCCEEDED = "Succeeded"  # the alias points at the target version
    ROLLED_BACK = "RolledBack"  # the alias points back at the original version
    STOPPED = "Stopped"  # stopped by a user, alias rolled back


@dataclass(frozen=True, slots=True)
class Preference:
    """How traffic moves: a canary (one step, then all) or linear steps of ``percent``."""

    kind: str  # "AllAtOnce", "Canary" or "Linear"
    percent: float
    interval_s: float

    def weights(self) -> list[float]:
        """The target's share at each step before the final switch (0-1)."""
        if self.kind == "AllAtOnce":
            return []
        if self.kind == "Canary":
            return [self.percent / 100]
        steps = []
        share = self.percent
        while share < 100:
            steps.append(share / 100)
            share += self.percent
        return steps


def parse_preference(text: str) -> Preference:
    """``AllAtOnce``, CodeDeploy's Canary/Linear names, or ``Canary:10:5`` / ``Linear:20:2``.

    Raises:
        InvalidParameterValueException: an unknown preference.
    """
    if text == "AllAtOnce":
        return Preference("AllAtOnce", 100, 0)
    named = _NAMED.fullmatch(text)
    if named and text in PREFERENCES:
        return Preference(named.group(1), float(named.group(2)), float(named.group(3)) * 60)
    custom = _CUSTOM.fullmatch(text)
    if custom and 0 < float(custom.group(2)) < 100:
        return Preference(custom.group(1), float(custom.group(2)), float(custom.group(3)))
    raise InvalidParameterValueException(
        f"Unknown deployment preference {text!r}: use one of {', '.join(sorted(PREFERENCES))}, "
        "or Canary:PERCENT:SECONDS / Linear:PERCENT:SECONDS"
    )


PREFERENCES = frozenset(
    {
        "AllAtOnce",
        "Canary10Percent5Minutes", "Canary10Percent10Minutes", "Canary10Percent15Minutes",
        "Canary10Percent30Minutes", "Linear10PercentEvery1Minute",
        "Linear10PercentEvery2Minutes", "Linear10PercentEvery3Minutes",
        "Linear10PercentEvery10Minutes",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Deployment:
    """One traffic shift, as stored and as served over the HTTP API."""

    id: str
    function_name: str
    alias: str
    original_version: str
    target_version: str
    preference: str
    state: DeploymentState
    step: int  # steps of the preference completed
    target_weight: float  # the target's current share (1.0 once switched)
    error_rate_threshold: float
    min_invocations: int
    pre_traffic_hook: str = ""
    post_traffic_hook: str = ""
    reason: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["state"] = self.state.value
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Deployment:
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        known["state"] = DeploymentState(known["state"])
        return cls(**known)


class HookInvoker(Protocol):
    """Runs a hook function synchronously; True when it reports success."""

    async def __call__(self, function_name: str, event: dict[str, Any]) -> bool: ...


class DeploymentManager:
    """Runs deployments, persists them, and resumes the unfinished ones at start."""

    __slots__ = ("_deployments", "_hooks", "_registry", "_stats", "_tasks", "_versions")

    def __init__(
        self,
        registry: DeploymentRegistry,
        versions: VersionCatalog,
        stats: VersionTally,
        hooks: HookInvoker,
    ) -> None:
        self._registry = registry
        self._versions = versions
        self._stats = stats
        self._hooks = hooks
        self._deployments: dict[str, Deployment] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for raw in await self._registry.load_deployments():
            deployment = Deployment.from_json(orjson.loads(raw))
            self._deployments[deployment.id] = deployment
            if deployment.state is DeploymentState.IN_PROGRESS:
                log.info("resuming deployment %s at step %d", deployment.id, deployment.step)
                self._launch(deployment)

    async def stop(self) -> None:
        """Stop running deployments where they stand; the next start resumes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def list(self) -> list[Deployment]:
        return sorted(self._deployments.values(), key=lambda d: d.created_at)

    def get(self, deployment_id: str) -> Deployment:
        found = self._deployments.get(deployment_id)
        if found is None:
            raise ResourceNotFoundException(f"Deployment not found: {deployment_id}")
        return found

    async def create(
        self, function_name: str, alias: str, target_version: str, preference: str,
        error_rate_threshold: float = 0.1, min_invocations: int = 5,
        pre_traffic_hook: str = "", post_traffic_hook: str = "",
    ) -> Deployment:  # fmt: skip
        """Start moving ``alias`` to ``target_version``.

        Raises:
            ResourceNotFoundException: no such function, alias, version or hook.
            InvalidParameterValueException: a bad preference or threshold, `$LATEST` as the
                target, an alias already being deployed, or one already on the target.
        """
        parse_preference(preference)
        current = self._versions.get_alias(function_name, alias)
        if target_version == LATEST or not target_version.isdigit():
            raise InvalidParameterValueException("The target must be a published version.")
        self._versions.version(function_name, target_version)
        if not 0.0 <= error_rate_threshold <= 1.0:
            raise InvalidParameterValueException("ErrorRateThreshold must be within 0.0-1.0.")
        for hook in (pre_traffic_hook, post_traffic_hook):
            if hook:
                self._versions.version(hook, LATEST)
        busy = [d for d in self._deployments.values()
                if d.state is DeploymentState.IN_PROGRESS and
                (d.function_name, d.alias) == (function_name, alias)]  # fmt: skip
        if busy:
            raise InvalidParameterValueException(
                f"Alias {alias} is already being deployed by {busy[0].id}."
            )
        if current.function_version == target_version and not current.additional_version_weights:
            raise InvalidParameterValueException(
                f"Alias {alias} already points at {target_version}."
            )
        deployment = Deployment(
            id=f"d-{uuid.uuid4().hex[:12]}", function_name=function_name, alias=alias,
            original_version=current.function_version, target_version=target_version,
            preference=preference, state=DeploymentState.IN_PROGRESS, step=0,
            target_weight=0.0, error_rate_threshold=error_rate_threshold,
            min_invocations=min_invocations, pre_traffic_hook=pre_traffic_hook,
            post_traffic_hook=post_traffic_hook,
        )  # fmt: skip
        await self._save(deployment)
        self._launch(deployment)
        return deployment

    async def stop_deployment(self, deployment_id: str) -> Deployment:
        """Stop a running deployment and roll its alias back."""
        deployment = self.get(deployment_id)
        task = self._tasks.pop(deployment_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if deployment.state is DeploymentState.IN_PROGRESS:
            return await self._roll_back(self.get(deployment_id), DeploymentState.STOPPED,
                                         "Stopped by a user")  # fmt: skip
        return deployment

    def _launch(self, deployment: Deployment) -> None:
        task = asyncio.create_task(self._run_guarded(deployment.id), name=deployment.id)
        self._tasks[deployment.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(deployment.id, None))

    async def _save(self, deployment: Deployment) -> Deployment:
        deployment = replace(deployment, updated_at=time.time())
        await self._registry.save_deployment(
            deployment.id, deployment.function_name, deployment.alias, deployment.state.value,
            deployment.created_at, orjson.dumps(deployment.to_json()),
        )  # fmt: skip
        self._deployments[deployment.id] = deployment
        return deployment

    async def _run_guarded(self, deployment_id: str) -> None:
        try:
            await self._run(deployment_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: never leave the alias half-shifted
            log.exception("deployment %s failed", deployment_id)
            await self._roll_back(self.get(deployment_id), DeploymentState.ROLLED_BACK,
                                  f"Deployment error: {exc}")  # fmt: skip

    async def _run(self, deployment_id: str) -> None:
        deployment = self.get(deployment_id)
        preference = parse_preference(deployment.preference)
        weights = preference.weights()
        if deployment.step == 0 and deployment.pre_traffic_hook:
            if not await self._hook(deployment, deployment.pre_traffic_hook, "PreTraffic"):
                await self._roll_back(deployment, DeploymentState.ROLLED_BACK,
                                      "PreTraffic hook failed")  # fmt: skip
                return
        while deployment.step < len(weights):
            weight = weights[deployment.step]
            await self._set_alias(deployment, weight)
            deployment = await self._save(replace(deployment, target_weight=weight))
            if not await self._watch(deployment, preference.interval_s):
                return
            deployment = await self._save(replace(deployment, step=deployment.step + 1))
        await self._set_alias(deployment, 1.0)
        deployment = await self._save(replace(deployment, target_weight=1.0,
                                              step=len(weights)))  # fmt: skip
        if deployment.post_traffic_hook and not await self._hook(
            deployment, deployment.post_traffic_hook, "PostTraffic"
        ):
            await self._roll_back(deployment, DeploymentState.ROLLED_BACK,
                                  "PostTraffic hook failed")  # fmt: skip
            return
        await self._save(replace(deployment, state=DeploymentState.SUCCEEDED,
                                 reason="The alias points at the target version"))  # fmt: skip
        log.info("deployment %s succeeded", deployment.id)

    async def _watch(self, deployment: Deployment, interval_s: float) -> bool:
        """Watch the target's error rate for ``interval_s``; roll back (False) if too high."""
        start = self._stats.read(deployment.function_name, deployment.target_version)
        deadline = time.monotonic() + interval_s
        while time.monotonic() < deadline:
            await asyncio.sleep(min(_WATCH_TICK_S, max(0.0, deadline - time.monotonic())))
            invocations, errors = self._stats.read(
                deployment.function_name, deployment.target_version
            )
            invocations, errors = invocations - start[0], errors - start[1]
            if invocations >= deployment.min_invocations and (
                errors / invocations > deployment.error_rate_threshold
            ):
                await self._roll_back(
                    deployment, DeploymentState.ROLLED_BACK,
                    f"Error rate of version {deployment.target_version} was "
                    f"{errors}/{invocations}, over {deployment.error_rate_threshold:.0%}",
                )  # fmt: skip
                return False
        return True

    async def _hook(self, deployment: Deployment, function_name: str, phase: str) -> bool:
        event = {"DeploymentId": deployment.id, "LifecycleEventHookExecutionId": phase,
                 "FunctionName": deployment.function_name, "Alias": deployment.alias,
                 "TargetVersion": deployment.target_version}  # fmt: skip
        return await self._hooks(function_name, event)

    async def _set_alias(self, deployment: Deployment, target_weight: float) -> None:
        if target_weight >= 1.0:
            changes: dict[str, Any] = {
                "function_version": deployment.target_version,
                "additional_version_weights": {},
            }
        else:
            changes = {
                "function_version": deployment.original_version,
                "additional_version_weights": {deployment.target_version: target_weight},
            }
        await self._versions.update_alias(deployment.function_name, deployment.alias, changes,
                                          None)  # fmt: skip

    async def _roll_back(self, deployment: Deployment, state: DeploymentState,
                         reason: str) -> Deployment:  # fmt: skip
        await self._versions.update_alias(
            deployment.function_name, deployment.alias,
            {"function_version": deployment.original_version, "additional_version_weights": {}},
            None,
        )  # fmt: skip
        log.warning("deployment %s rolled back: %s", deployment.id, reason)
        return await self._save(replace(deployment, state=state, target_weight=0.0,
                                        reason=reason))  # fmt: skip


def hook_invoker(invoke: Any, versions: VersionCatalog, arn: Any) -> HookInvoker:
    """A HookInvoker that runs hooks through the node's own invoker."""

    async def run(function_name: str, event: dict[str, Any]) -> bool:
        config = versions.version(function_name, LATEST)
        result = await invoke(
            InvocationRequest(
                request_id=str(uuid.uuid4()), function=config, payload=orjson.dumps(event),
                invoked_arn=arn(function_name), trace_id="",
            )
        )  # fmt: skip
        if result.is_error:
            return False
        try:
            answer = orjson.loads(result.payload)
        except orjson.JSONDecodeError:
            return True
        return not (isinstance(answer, dict) and str(answer.get("status", "")).lower() == "failed")

    return run
