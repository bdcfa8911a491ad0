from __future__ import annotations

import os
import resource
from pathlib import Path

from faas_python_runtime.channel import PeakMemory


def test_reads_the_environments_peak_again_on_every_call(tmp_path: Path) -> None:
    peak_file = tmp_path / "memory.max_usage_in_bytes"
    peak_file.write_text(f"{64 * 1024**3}\n")  # far above our own RSS
    peak = PeakMemory(str(peak_file))
    assert peak.kb() == 64 * 1024**2
    with open(peak_file, "r+") as rewrite:  # in place, as the kernel's counter changes
        rewrite.write(f"{96 * 1024**3}\n")
    assert peak.kb() == 96 * 1024**2


def test_falls_back_to_own_rss_and_reopens_after_the_handler_closed_the_file(
    tmp_path: Path,
) -> None:
    peak_file = tmp_path / "peak"
    peak_file.write_text(f"{64 * 1024**3}\n")
    peak = PeakMemory(str(peak_file))
    assert peak.kb() == 64 * 1024**2
    assert peak._fd is not None
    os.close(peak._fd)  # what a handler closing every descriptor would do
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert own <= peak.kb() < 64 * 1024**2  # this once: only our own peak
    assert peak.kb() == 64 * 1024**2  # then the file again


def test_without_a_file_reports_own_peak_rss() -> None:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert PeakMemory(None).kb() >= own > 0
