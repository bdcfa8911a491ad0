"""PNG charts of a scenario's results, drawn with matplotlib when the ``plot`` extra is there."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: grouped bars (``kind="bar"``) or lines over numeric x (``kind="line"``)."""

    name: str
    title: str
    kind: str
    x_label: str
    y_label: str
    categories: tuple[str, ...]  # bar groups, or the x values (as text) of a line chart
    series: dict[str, tuple[float, ...]]  # one value per category, per series
    log_y: bool = False


def can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def render_charts(charts: list[Chart], out_dir: Path, stem: str) -> list[Path]:
    """Draw each chart to ``<stem>-<name>.png``; nothing (and no error) without matplotlib."""
    if not charts or not can_plot():
        return []
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    paths: list[Path] = []
    for chart in charts:
        figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
        if chart.kind == "line":
            xs = [float(value) for value in chart.categories]
            for name, values in chart.series.items():
                axes.plot(xs[: len(values)], values, marker="o", markersize=3, label=name)
        else:
            width = 0.8 / max(1, len(chart.series))
            for index, (name, values) in enumerate(chart.series.items()):
                positions = [i + index * width for i in range(len(values))]
                axes.bar(positions, values, width=width, label=name)
            axes.set_xticks([i + 0.4 - width / 2 for i in range(len(chart.categories))])
            axes.set_xticklabels(chart.categories)
        if chart.log_y:
            axes.set_yscale("log")
        axes.set_title(chart.title)
        axes.set_xlabel(chart.x_label)
        axes.set_ylabel(chart.y_label)
        axes.grid(axis="y", alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = out_dir / f"{stem}-{chart.name}.png"
        figure.savefig(path)
        pyplot.close(figure)
        paths.append(path)
    return paths
