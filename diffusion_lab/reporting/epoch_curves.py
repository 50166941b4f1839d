"""A classify job's validation accuracy and loss per epoch, read from its event files.

The `EpochScalars` callback (on in `conf/callbacks/classifier.yaml`) logs `val/acc` and
`val/loss` again as `val_by_epoch/acc` and `val_by_epoch/loss` at step = epochs done, so runs
with different numbers of steps per epoch (real against augmented) line up. Epochs are counted
from 1: the validation after the first epoch is epoch 1.
"""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffusion_lab.figures.curves import EpochCurve
from diffusion_lab.reporting.sweeps import mean_std
from diffusion_lab.tracking import tags

Curve = dict[int, float]  # epoch (1-based) -> value


def validation_by_epoch(job: Path) -> dict[str, Curve]:
    """{"acc": curve, "loss": curve} of one job; empty curves where nothing was logged."""
    events = EventAccumulator(str(job), size_guidance={"scalars": 0})
    events.Reload()
    logged = set(events.Tags()["scalars"])
    curves: dict[str, Curve] = {}
    for name, tag in (("acc", tags.by_epoch(tags.VAL_ACC)), ("loss", tags.by_epoch(tags.VAL_LOSS))):
        points = events.Scalars(tag) if tag in logged else []
        curves[name] = {p.step: p.value for p in points}
    return curves


def mean_curve(curves: list[Curve], scale: float = 1.0) -> EpochCurve:
    """Mean and sample std (None for a single run) of `scale` * value at every epoch that all
    `curves` have."""
    epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    stats = [mean_std([scale * c[e] for c in curves]) for e in epochs]
    stds = [s for _, s in stats] if len(curves) > 1 else None
    return epochs, [m for m, _ in stats], stds
