"""Curves over steps and epochs: losses, the noise schedule, per-epoch means with their spread."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from diffusion_lab.tracking.loss_history import LossHistory


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
