"""Metrics against a swept value: a panel per metric, a line per group of jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure


def label_swept_values(ax: Axes, values: Sequence[float]) -> None:
    """One x tick per swept value; a log axis where the values span two decades or more."""
    if values[0] > 0 and values[-1] >= 100 * values[0]:
        ax.set_xscale("log")
    ax.set_xticks(values, labels=[f"{v:g}" for v in values])
    ax.minorticks_off()


def metrics_by_job_figure(
    xlabel: str,
    xs: Sequence[float] | Sequence[str],
    metrics: Mapping[str, Sequence[float | None]],
    title: str = "",
) -> Figure:
    """One panel per metric: its value per job against `xs`, a line over numbers (sorted) or
    points over labels; jobs without the metric (None) are left out."""
    fig = Figure(figsize=(4.5 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    numeric = all(isinstance(x, int | float) for x in xs)
    for ax, (name, values) in zip(axes, metrics.items(), strict=True):
        kept = [(i, x, v) for i, (x, v) in enumerate(zip(xs, values, strict=True)) if v is not None]
        if numeric:
            kept.sort(key=lambda point: point[1])
            ax.plot([x for _, x, _ in kept], [v for *_, v in kept], "o-")
            label_swept_values(ax, sorted(set(xs)))
        else:
            ax.plot([i for i, _, _ in kept], [v for *_, v in kept], "o")
            ax.set_xticks(range(len(xs)), labels=list(xs), rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return fig


# (x values, y values) of one line, in the order they are drawn
Line = tuple[Sequence[float], Sequence[float]]


LINE_STYLES = ("-", "--", ":", "-.")


def swept_lines_figure(
    xlabel: str, panels: Mapping[str, Mapping[str, Mapping[str, Line]]], title: str = ""
) -> Figure:
    """One panel per y label (the key of `panels`); in a panel, each metric (e.g. precision
    and recall) has a line style and each group (e.g. a step count) a colour shared by all
    panels. The x ticks are the values drawn."""
    fig = Figure(figsize=(4.8 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    groups = list(dict.fromkeys(g for panel in panels.values() for m in panel.values() for g in m))
    for ax, (ylabel, metrics) in zip(axes, panels.items(), strict=True):
        for style, (metric, lines) in zip(LINE_STYLES, metrics.items(), strict=False):
            for group, (xs, ys) in lines.items():
                label = group if len(metrics) == 1 else f"{metric}, {group}"
                color = f"C{groups.index(group) % 10}"
                ax.plot(xs, ys, marker="o", linestyle=style, color=color, label=label)
        ticks = sorted({x for lines in metrics.values() for xs, _ in lines.values() for x in xs})
        if ticks:  # a panel of jobs without a numeric x stays empty
            label_swept_values(ax, ticks)
            ax.legend(fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return fig
