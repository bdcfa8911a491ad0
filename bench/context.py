"""What a scenario runs with: options, the servers it may start, the client, the display."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.clients import LoadClient
from bench.machine import Pinning
from bench.options import Options
from bench.progress import ProgressDisplay
from bench.report import ScenarioResult
from bench.services import Services


@dataclass(frozen=True, slots=True)
class RunContext:
    """The components one scenario uses; ``result`` is where it records its findings."""

    options: Options
    services: Services
    session: aiohttp.ClientSession  # control plane: create functions, read /metrics
    client: LoadClient  # the load itself
    display: ProgressDisplay
    pinning: Pinning
    workdir: Path  # a temporary directory removed after the run
    result: ScenarioResult

    def for_scenario(self, scenario: str) -> RunContext:
        """The same components with a fresh result and scratch directory for ``scenario``."""
        workdir = self.workdir / scenario
        workdir.mkdir(parents=True, exist_ok=True)
        return dataclasses.replace(self, result=ScenarioResult(scenario), workdir=workdir)
