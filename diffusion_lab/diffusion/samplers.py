"""Samplers: pure functions of (network, schedule, initial noise, labels, generator, ...).

The caller owns the initial noise x_T and the generator, so a sample is reproducible from
(seed, labels) alone and two samplers can be compared on identical noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor, nn

from diffusion_lab.diffusion.guidance import guided_eps
from diffusion_lab.diffusion.schedules import NoiseSchedule

Variance = Literal["fixed_small", "fixed_large"]
Progress = Callable[[Iterable[int]], Iterable[int]]


def step_variance(schedule: NoiseSchedule, variance: Variance) -> Tensor:
    """Per-step variance sigma_t^2 of the reverse process (DDPM sec. 3.2): both choices, shape (T,).

    "fixed_small" is the posterior variance beta~_t (optimal for deterministic x0),
    "fixed_large" is beta_t (optimal for x0 ~ N(0, I)).
    """
    if variance == "fixed_small":
        return schedule.posterior_variance
    if variance == "fixed_large":
        return schedule.betas
    raise ValueError(f"variance={variance!r}: expected 'fixed_small' or 'fixed_large'")


@torch.no_grad()
def ancestral_sample(
    net: nn.Module,
    schedule: NoiseSchedule,
    x_T: Tensor,
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    w: float = 1.8,
    null_label: int,
    variance: Variance = "fixed_small",
    clip_x0: bool = True,
    progress: Progress | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Algorithm 2) with classifier-free guidance.

    x_T: initial noise (B, C, H, W); labels: (B,) class indices. Returns x_0 in [-1, 1] when
    clip_x0, else unclipped. `progress` wraps the step iterator (e.g. tqdm) for a progress bar.
    """
    sigmas = step_variance(schedule, variance).sqrt()
    steps: Iterable[int] = range(schedule.T - 1, -1, -1)
    if progress is not None:
        steps = progress(steps)
    x = x_T
    for step in steps:
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        eps = guided_eps(net, x, t, labels, w, null_label)
        # Predict x0 (eq. 15), optionally clip it to the data range, take the posterior mean (7).
        x0 = schedule.predict_x0(x, t, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        x = schedule.posterior_mean(x0, x, t)
        if step > 0:
            x = x + sigmas[step] * torch.randn(
                x.shape, device=x.device, dtype=x.dtype, generator=generator
            )
    return x
