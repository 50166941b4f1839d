"""Grouped bars per class: accuracies and their differences, mean ± std over runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from diffusion_lab.figures.fonts import label_text


def grouped_bars(
    ax: Axes, stats: Mapping[str, Sequence[tuple[float, float | None]]], classes: Sequence[str]
) -> None:
    """Per series, a bar per class at 100 * mean, with ± 100 * std error bars where std is set."""
    width = 0.8 / len(stats)
    for i, (label, values) in enumerate(stats.items()):
        positions = [k + (i - (len(stats) - 1) / 2) * width for k in range(len(classes))]
        means = [100 * m for m, _ in values]
        # A single run has no spread: no error bar rather than a bar of zero height.
        stds = None if any(s is None for _, s in values) else [100 * s for _, s in values]
        ax.bar(positions, means, width, yerr=stds, capsize=2, label=label)
    labels, font = label_text(classes)
    ax.set_xticks(range(len(classes)), labels=labels, rotation=45, ha="right", **font)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def per_class_accuracy_figure(
    stats: Mapping[str, Sequence[tuple[float, float | None]]],
    classes: Sequence[str],
    title: str = "Test accuracy per class",
) -> Figure:
    """Grouped bars: per series, the mean accuracy of each class with ± one std as error bars
    (none for a series whose std is None, i.e. a single run)."""
    fig = Figure(figsize=(max(6.0, 1.0 + 0.9 * len(classes)), 4))
    ax = fig.subplots()
    grouped_bars(ax, stats, classes)
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    return fig


def per_class_difference_figure(
    stats: Mapping[str, Sequence[tuple[float, float | None]]],
    classes: Sequence[str],
    title: str = "",
) -> Figure:
    """Grouped bars of per-class accuracy differences (e.g. augmented − real) in points, with
    ± one std over seeds as error bars (none where a series has a single pair)."""
    fig = Figure(figsize=(max(6.0, 1.0 + 0.9 * len(classes)), 4))
    ax = fig.subplots()
    ax.axhline(0.0, color="black", linewidth=0.8)
    grouped_bars(ax, stats, classes)
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy difference (points)")
    ax.set_title(title, fontsize=9)
    return fig
