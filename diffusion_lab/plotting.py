"""Matplotlib figures and atomic PNG writing, built with the object API (no pyplot state)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor
from torchvision.utils import make_grid

from diffusion_lab.files import atomic_path
from diffusion_lab.fonts import label_text
from diffusion_lab.loss_history import LossHistory


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


GRID_PADDING = 2


def wrap_overrides(overrides: str, width: int = 80, max_lines: int = 3) -> str:
    """`a=1,b=2,...` for a title: lines of at most `width` characters, broken after commas, at
    most `max_lines` of them (then `...`), so a long sweep name does not widen the figure."""
    spaced = re.sub(r",(?! )", ", ", overrides)
    lines = textwrap.wrap(spaced, width, max_lines=max_lines, placeholder=" ...")
    return "\n".join(lines)


def class_grid(images: Tensor, per_class: int) -> Tensor:
    """uint8 (K * per_class, C, H, W), class-major -> a uint8 (C, H', W') grid, a row per class."""
    return make_grid(images, nrow=per_class, padding=GRID_PADDING, pad_value=255)


def class_grid_figure(grid: Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """A `class_grid` (one row per name in `class_names`) with each row labelled by its class."""
    rows = len(class_names)
    # make_grid lays out rows * (h + padding) + padding pixels.
    cell = (grid.shape[-2] - GRID_PADDING) / rows
    image = grid.permute(1, 2, 0).cpu().numpy()
    columns = image.shape[1] / image.shape[0] * rows
    fig = Figure(figsize=(1.0 + 0.6 * columns, 0.6 * rows + 0.6))
    ax = fig.subplots()
    ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    centres = [GRID_PADDING + cell * i + (cell - GRID_PADDING) / 2 for i in range(rows)]
    labels, font = label_text(class_names)
    ax.set_yticks(centres, labels=labels, **font)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    return fig


def moving_average(values: Tensor, window: int) -> Tensor:
    """Trailing mean over up to `window` values (shorter at the start), same length as `values`."""
    cumsum = torch.cat([values.new_zeros(1), values.cumsum(0)])
    idx = torch.arange(1, len(values) + 1)
    start = (idx - window).clamp(min=0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def loss_curve_figure(
    train_steps: Sequence[int],
    train_losses: Sequence[float],
    val_steps: Sequence[int],
    val_losses: Sequence[float],
    val_label: str = "validation",
    ylabel: str = "MSE on eps",
) -> Figure:
    """Training loss per step (raw and smoothed) and validation loss, log scale."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if train_losses:
        window = max(1, len(train_losses) // 50)
        smoothed = moving_average(torch.tensor(train_losses, dtype=torch.float64), window).tolist()
        ax.plot(
            train_steps,
            train_losses,
            color="tab:blue",
            alpha=0.25,
            linewidth=0.8,
            label="train (step)",
        )
        ax.plot(train_steps, smoothed, color="tab:blue", label=f"train (mean of {window})")
    if val_losses:
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", label=val_label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def schedule_figure(curves: Mapping[str, tuple[Tensor, Tensor]], title: str = "") -> Figure:
    """beta(t), alpha_bar(t) and log-SNR(t) side by side; `curves` maps a label to
    (betas, alpha_bars), each of shape (T,). t is drawn as the 0-based index the code uses
    (betas[0] = beta_1), as in the validation quarters' names (`val/loss_t0000-0124`)."""
    fig = Figure(figsize=(12, 3.4))
    ax_beta, ax_abar, ax_snr = fig.subplots(1, 3)
    for label, (betas, alpha_bars) in curves.items():
        betas, alpha_bars = betas.double().cpu(), alpha_bars.double().cpu()
        steps = torch.arange(len(betas))
        ax_beta.plot(steps, betas, label=label)
        ax_abar.plot(steps, alpha_bars, label=label)
        ax_snr.plot(steps, torch.log(alpha_bars / (1.0 - alpha_bars)), label=label)
    ax_beta.set_yscale("log")
    panels = ((ax_beta, "beta_t"), (ax_abar, "alpha_bar_t"), (ax_snr, "log SNR_t"))
    for ax, name in panels:
        ax.set_xlabel("t (0-based index; the paper's step t + 1)")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
    if len(curves) > 1:
        ax_snr.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def sweep_grid_figure(
    rows: Sequence[tuple[str, Tensor]], class_names: Sequence[str], title: str = ""
) -> Figure:
    """One panel per job: `rows` holds (label, uint8 (n * K, C, H, W) images, one column per
    class); panels of different image sizes are drawn at the same width."""
    columns = len(class_names)
    labels, font = label_text(class_names)
    per_class = max(len(images) // columns for _, images in rows)
    fig = Figure(figsize=(1.8 + 0.7 * columns, (0.7 * per_class + 0.25) * len(rows) + 0.6))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for i, (ax, (label, images)) in enumerate(zip(axes, rows, strict=True)):
        grid = make_grid(images, nrow=columns, padding=GRID_PADDING, pad_value=255)
        ax.imshow(grid.permute(1, 2, 0).cpu().numpy(), vmin=0, vmax=255)
        cell = (grid.shape[-1] - GRID_PADDING) / columns
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([GRID_PADDING / 2 + cell * (c + 0.5) for c in range(columns)])
        ax.set_xticklabels(labels if i == 0 else [], fontsize=7, **font)
        ax.xaxis.set_ticks_position("top")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return fig


def loss_overlay_figure(curves: Mapping[str, LossHistory], title: str = "") -> Figure:
    """Each job's smoothed training loss (line) and validation loss (dots) in one log plot;
    `curves` maps a label to (train_steps, train_losses, val_steps, val_losses)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for i, (label, (steps, losses, val_steps, val_losses)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        if losses:
            window = max(1, len(losses) // 50)
            smoothed = moving_average(torch.tensor(losses, dtype=torch.float64), window)
            ax.plot(
                steps, smoothed.tolist(), color=color, label=f"{label} (train, mean of {window})"
            )
        if val_losses:
            ax.plot(val_steps, val_losses, "o--", color=color, markersize=3, label=f"{label} (val)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MSE on eps")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


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


# (epochs, mean per epoch, sample std per epoch or None for a single run)
EpochCurve = tuple[Sequence[int], Sequence[float], Sequence[float] | None]


def epoch_curves_figure(
    panels: Mapping[str, Mapping[str, EpochCurve]], title: str = "", xlabel: str = "epoch"
) -> Figure:
    """One panel per metric (its y label is the key of `panels`); in each, a line per series
    (mean over runs) with a shaded ± one std band where there is more than one run."""
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (ylabel, curves) in zip(axes, panels.items(), strict=True):
        for i, (label, (epochs, means, stds)) in enumerate(curves.items()):
            color = f"C{i % 10}"
            ax.plot(epochs, means, "o-", color=color, markersize=3, label=label)
            if stds is not None:
                low = [m - s for m, s in zip(means, stds, strict=True)]
                high = [m + s for m, s in zip(means, stds, strict=True)]
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


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


def nearest_pairs_figure(generated: Tensor, nearest: Tensor, ratios: Sequence[float]) -> Figure:
    """Generated images (top row) over their nearest training images (bottom row), each pair
    titled with d_1 / d_2; uint8 (n, C, H, W) each."""
    n = len(generated)
    fig = Figure(figsize=(1.2 * n + 0.8, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for row, image in enumerate((generated[i], nearest[i])):
            ax = axes[row, i]
            picture = image.permute(1, 2, 0).squeeze(-1).cpu().numpy()
            ax.imshow(picture, cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, i].set_title(f"{ratios[i]:.2f}", fontsize=8)
    axes[0, 0].set_ylabel("generated", fontsize=8)
    axes[1, 0].set_ylabel("nearest\ntraining", fontsize=8)
    fig.suptitle("closest pairs in feature space (title: d1/d2, nearest / second nearest)")
    return fig
