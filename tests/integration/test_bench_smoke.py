"""`faas bench smoke` runs every benchmark scenario at tiny size and writes sane result files.

This proves the suite works (servers start and stop, every target and mode is
exercised, results are written); it asserts nothing about speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.timeout(300)

SCENARIOS = (
    "warm", "payload", "cold", "burst", "memory", "async", "cpu-share", "keepalive", "startup",
    "provisioned",
)  # fmt: skip
TARGETS = {"faas", "in-process", "warm-IPC", "spawn"}
RUN_TIMEOUT_S = 240


def _processes_under(path: Path) -> list[str]:
    """Processes still running whose command line or working directory is under ``path``."""
    leftovers = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        cwd = process.info.get("cwd") or ""
        if str(path) in cmdline or cwd.startswith(str(path)):
            leftovers.append(f"{process.info['pid']}: {cmdline}")
    return leftovers


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run `faas bench smoke` once; returns (results directory, scratch directory)."""
    root = tmp_path_factory.mktemp("bench-smoke")
    out, scratch = root / "results", root / "scratch"
    scratch.mkdir()
    # The benchmark's servers and data live under TMPDIR: a leak check can find them there.
    env = {**os.environ, "TMPDIR": str(scratch)}
    completed = subprocess.run(
        [sys.executable, "-m", "faas", "bench", "smoke", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, (
        f"faas bench smoke exited {completed.returncode}\n"
        f"stdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-8000:]}"
    )
    return out, scratch


def _document(out: Path) -> dict[str, Any]:
    (path,) = out.glob("smoke-*.json")
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def test_writes_one_json_and_one_markdown_file(smoke_run: tuple[Path, Path]) -> None:
    out, _ = smoke_run
    json_files = list(out.glob("smoke-*.json"))
    md_files = list(out.glob("smoke-*.md"))
    assert len(json_files) == 1 and len(md_files) == 1
    assert json_files[0].stem == md_files[0].stem
    markdown = md_files[0].read_text()
    assert markdown.startswith("# faas bench smoke")
    assert "| load | faas req/s |" in markdown


def test_records_machine_pinning_and_generator(smoke_run: tuple[Path, Path]) -> None:
    document = _document(smoke_run[0])
    assert document["schema"] == 1
    assert document["scenario"] == "smoke"
    assert document["command"].startswith("faas bench smoke")
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["python"]
    assert {"uvloop", "aiohttp"} <= set(machine["packages"])
    assert {"generator_cores", "sut_cores", "method", "note"} <= set(document["pinning"])
    assert document["generator"]["description"]


def test_every_scenario_ran_without_problems(smoke_run: tuple[Path, Path]) -> None:
    document = _document(smoke_run[0])
    assert document["problems"] == []
    assert set(SCENARIOS) <= set(document["headline"])
    assert {run["scenario"] for run in document["runs"]} == set(SCENARIOS)
    for table in document["tables"]:
        assert table["rows"], table["title"]
        assert all(len(row) == len(table["columns"]) for row in table["rows"]), table["title"]


def test_warm_runs_cover_every_target_with_consistent_percentiles(
    smoke_run: tuple[Path, Path],
) -> None:
    runs = [run for run in _document(smoke_run[0])["runs"] if run["scenario"] == "warm"]
    assert {run["target"] for run in runs} == TARGETS
    assert {run["mode"] for run in runs} == {"closed", "open"}
    for run in runs:
        latency = run["latency_ms"]
        assert run["completed"] > 0 and run["errors"] == {}
        assert latency["count"] == run["completed"]
        assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
        assert latency["p99_ms"] <= latency["p999_ms"] <= latency["max_ms"]
        assert run["hdr_latency_us"]


def test_scenario_headlines_hold_their_figures(smoke_run: tuple[Path, Path]) -> None:
    headline = _document(smoke_run[0])["headline"]
    assert headline["cold"]["first_p50_ms"] > 0
    assert set(headline["cold"]["split_p50_ms"]) >= {"spawn", "runtime_init", "function_init"}
    assert headline["burst"]["time_to_all_serving_s"] > 0
    assert any(key.startswith("envs_") for key in headline["memory"])
    assert headline["async"]["accepted_per_s"] > 0 and headline["async"]["drained_per_s"] > 0
    assert any(key.startswith("cores_") for key in headline["cpu-share"])


def test_charts_are_drawn_when_matplotlib_is_installed(smoke_run: tuple[Path, Path]) -> None:
    out, _ = smoke_run
    charts = _document(out)["charts"]
    if importlib.util.find_spec("matplotlib") is None:
        assert charts == []
        pytest.skip("matplotlib (the plot extra) is not installed")
    assert charts
    assert all((out / name).stat().st_size > 0 for name in charts)


def test_stops_everything_it_started(smoke_run: tuple[Path, Path]) -> None:
    _, scratch = smoke_run
    assert _processes_under(scratch) == []
