"""Scenario results and their files: ``<scenario>-<timestamp>.json``, ``.md`` and PNG charts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.charts import Chart, render_charts

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Table:
    """A table as printed: formatted cells, one header per column."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(slots=True)
class ScenarioResult:
    """What a scenario found; scenarios fill it in as they go.

    ``runs`` are the raw measurements (JSON values), ``tables`` the derived views with
    ratios, ``headline`` the few figures the README quotes, ``problems`` anything that
    went wrong (failed requests, missing samples) as opposed to merely being slow.
    """

    scenario: str
    tables: list[Table] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # Any: JSON values
    notes: list[str] = field(default_factory=list)
    headline: dict[str, Any] = field(default_factory=dict)  # Any: JSON values
    charts: list[Chart] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    server_logs: dict[str, str] = field(default_factory=dict)  # kept when there are problems

    def absorb(self, other: ScenarioResult) -> None:
        """Append ``other``'s findings, prefixed with its scenario name (for ``smoke``)."""
        prefix = other.scenario
        self.tables += [
            Table(f"{prefix}: {table.title}", table.columns, table.rows, table.note)
            for table in other.tables
        ]
        self.runs += [{"scenario": prefix, **run} for run in other.runs]
        self.notes += [f"{prefix}: {note}" for note in other.notes]
        self.headline[prefix] = other.headline
        self.charts += [
            Chart(
                f"{prefix}-{chart.name}",
                f"{prefix}: {chart.title}",
                chart.kind,
                chart.x_label,
                chart.y_label,
                chart.categories,
                chart.series,
                chart.log_y,
            )
            for chart in other.charts
        ]
        self.problems += [f"{prefix}: {problem}" for problem in other.problems]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Everything about a run that is not a measurement."""

    command: str
    started_at: datetime
    finished_at: datetime
    options: dict[str, Any]  # Any: JSON values
    machine: dict[str, Any]  # Any: JSON values
    pinning: dict[str, Any]  # Any: JSON values
    generator: dict[str, Any]  # Any: JSON values


def result_stem(scenario: str, started_at: datetime) -> str:
    return f"{scenario}-{started_at.strftime('%Y%m%d-%H%M%S')}"


def _document(result: ScenarioResult, info: RunInfo, chart_files: list[str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "scenario": result.scenario,
        "command": info.command,
        "started_at": info.started_at.isoformat(),
        "finished_at": info.finished_at.isoformat(),
        "wall_s": round((info.finished_at - info.started_at).total_seconds(), 2),
        "options": info.options,
        "machine": info.machine,
        "pinning": info.pinning,
        "generator": info.generator,
        "headline": result.headline,
        "notes": result.notes,
        "problems": result.problems,
        "server_logs": result.server_logs,
        "tables": [asdict(table) for table in result.tables],
        "runs": result.runs,
        "charts": chart_files,
    }


def _markdown(result: ScenarioResult, info: RunInfo, chart_files: list[str]) -> str:
    machine = info.machine
    packages = machine.get("packages", {})
    wall_s = (info.finished_at - info.started_at).total_seconds()
    lines = [
        f"# faas bench {result.scenario}",
        "",
        f"`{info.command}` — {info.started_at:%Y-%m-%d %H:%M:%S %Z}, {wall_s:.0f} s.",
        "",
        f"Machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, "
        f"{machine.get('memory_mb')} MB, Linux {machine.get('kernel')}, "
        f"Python {machine.get('python')}, uvloop {packages.get('uvloop')}, "
        f"aiohttp {packages.get('aiohttp')}. Pinning: {info.pinning.get('note')}. "
        f"Load average before/after: {_loads(machine.get('load_average'))} / "
        f"{_loads(machine.get('load_average_after'))}.",
        "",
        f"Load generator: {info.generator.get('description', '')}",
        "",
    ]
    if result.problems:
        lines += ["**Problems:**", "", *[f"- {problem}" for problem in result.problems], ""]
    if result.notes:
        lines += ["Notes:", "", *[f"- {note}" for note in result.notes], ""]
    for table in result.tables:
        lines += [table.markdown(), ""]
    lines += [f"![{name}]({name})" for name in chart_files]
    return "\n".join(lines).rstrip() + "\n"


def _loads(values: object) -> str:
    if not isinstance(values, list):
        return "?"
    return ", ".join(f"{value:.2f}" for value in values)


def write_report(
    out_dir: Path, result: ScenarioResult, info: RunInfo, with_charts: bool
) -> list[Path]:
    """Write the JSON document, the Markdown tables and (if possible) charts; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result.scenario, info.started_at)
    charts = render_charts(result.charts, out_dir, stem) if with_charts else []
    chart_files = [path.name for path in charts]
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(
        json.dumps(_document(result, info, chart_files), indent=1, default=str) + "\n",
        encoding="utf-8",
    )
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(_markdown(result, info, chart_files), encoding="utf-8")
    return [json_path, md_path, *charts]
