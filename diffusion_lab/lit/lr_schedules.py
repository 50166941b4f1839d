"""Learning-rate schedules (the optimiser's, not the noise schedule), stepped once per step.

Each is called as `factory(optimizer, total_steps)` from `configure_optimizers`, with
`total_steps` from Lightning's `estimated_stepping_batches`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pytorch_lightning as pl
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from diffusion_lab.tracking import tags


def constant(optimizer: Optimizer, total_steps: int) -> LambdaLR:
    """The base learning rate throughout."""
    return LambdaLR(optimizer, lambda step: 1.0)


def warmup_factor(step: int, warmup_steps: int, peak_factor: float) -> float:
    """Multiplier during warm-up: linear from 1 at step 0 up to peak_factor at warmup_steps."""
    return 1.0 + (peak_factor - 1.0) * step / warmup_steps


def decay_progress(step: int, total_steps: int, warmup_steps: int) -> float:
    """Fraction of the decay phase done at `step`: 0 at the end of warm-up, 1 from total_steps."""
    return min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))


def warmup_cosine_factor(
    step: int, total_steps: int, warmup_fraction: float, peak_factor: float
) -> float:
    """Multiplier of the base rate: linear from 1 up to peak_factor, then a cosine down to 0."""
    warmup_steps = max(1, round(warmup_fraction * total_steps))
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps, peak_factor)
    progress = decay_progress(step, total_steps, warmup_steps)
    return peak_factor * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_linear_factor(
    step: int, total_steps: int, warmup_fraction: float, peak_factor: float
) -> float:
    """Multiplier of the base rate: linear from 1 up to peak_factor, then linear down to 0."""
    warmup_steps = max(1, round(warmup_fraction * total_steps))
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps, peak_factor)
    return peak_factor * (1.0 - decay_progress(step, total_steps, warmup_steps))


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1, peak_factor: float = 2.5
) -> LambdaLR:
    """The study's reference schedule: warm up to peak_factor x the base rate over the first
    warmup_fraction of training, then anneal with a cosine to zero."""
    return LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(step, total_steps, warmup_fraction, peak_factor),
    )


def warmup_linear(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1, peak_factor: float = 2.5
) -> LambdaLR:
    """The same warm-up as `warmup_cosine`, then a linear decay to zero at the last step."""
    return LambdaLR(
        optimizer,
        lambda step: warmup_linear_factor(step, total_steps, warmup_fraction, peak_factor),
    )


def optimizers_with_step_schedule(
    module: pl.LightningModule,
    params: Iterable[nn.Parameter],
    optimizer_factory: Callable[..., Optimizer],
    lr_schedule_factory: Callable[[Optimizer, int], LRScheduler] | None,
) -> dict:
    """configure_optimizers' dict: the optimizer and, if given, a per-step lr schedule."""
    optimizer = optimizer_factory(params)
    if lr_schedule_factory is None:
        return {"optimizer": optimizer}
    total_steps = int(module.trainer.estimated_stepping_batches)
    scheduler = lr_schedule_factory(optimizer, total_steps)
    # The name is LearningRateMonitor's tag for it.
    schedule = {"scheduler": scheduler, "interval": "step", "name": tags.LEARNING_RATE}
    return {"optimizer": optimizer, "lr_scheduler": schedule}
