"""A classify job's validation accuracy and loss per epoch, read from its event files.

Lightning logs `val/acc` and `val/loss` at the optimizer step of each validation, and with
every logged scalar an `epoch` scalar (the 0-based epoch) at the same step; that maps each
validation to its epoch, so runs with different numbers of steps per epoch (real against
augmented) line up. Runs that log `val_by_epoch/acc` and `val_by_epoch/loss` (the
`EpochScalars` callback: step = epochs done) are read from those tags directly. Epochs are
counted from 1 here: the validation after the first epoch is epoch 1.
"""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffusion_lab.figures.curves import EpochCurve
from diffusion_lab.reporting.sweeps import mean_std

# name -> (tag at the validation's step, tag at the epoch as step)
VALIDATION_TAGS = {
    "acc": ("val/acc", "val_by_epoch/acc"),
    "loss": ("val/loss", "val_by_epoch/loss"),
}

Curve = dict[int, float]  # epoch (1-based) -> value


def validation_by_epoch(job: Path) -> dict[str, Curve]:
    """{"acc": curve, "loss": curve} of one job; empty curves where nothing was logged."""
    events = EventAccumulator(str(job), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    epoch_at = {p.step: int(p.value) for p in events.Scalars("epoch")} if "epoch" in tags else {}
    curves: dict[str, Curve] = {}
    for name, (by_step, by_epoch) in VALIDATION_TAGS.items():
        if by_epoch in tags:
            curves[name] = {p.step: p.value for p in events.Scalars(by_epoch)}
        elif by_step in tags and epoch_at:
            points = events.Scalars(by_step)
            curves[name] = {epoch_at[p.step] + 1: p.value for p in points if p.step in epoch_at}
        else:
            curves[name] = {}
    return curves


def mean_curve(curves: list[Curve], scale: float = 1.0) -> EpochCurve:
    """Mean and sample std (None for a single run) of `scale` * value at every epoch that all
    `curves` have."""
    epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    stats = [mean_std([scale * c[e] for c in curves]) for e in epochs]
    stds = [s for _, s in stats] if len(curves) > 1 else None
    return epochs, [m for m, _ in stats], stds
