"""Samplers: pure functions of (network, schedule, initial noise, labels, generator, ...).

The caller owns the initial noise x_T and the generator, so a sample is reproducible from
(seed, labels) alone and two samplers can be compared on identical noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from diffusion_lab.diffusion.guidance import guidance_weight, guided_eps
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
    guidance_interval: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Algorithm 2) with classifier-free guidance.

    x_T: initial noise (B, C, H, W); labels: (B,) class indices. Returns x_0 in [-1, 1] when
    clip_x0, else unclipped. Guidance applies at the indices of `guidance_interval` [t_lo, t_hi]
    (inclusive; None: all). `progress` wraps the step iterator (e.g. tqdm) for a progress bar.
    """
    sigmas = step_variance(schedule, variance).sqrt()
    steps: Iterable[int] = range(schedule.T - 1, -1, -1)
    if progress is not None:
        steps = progress(steps)
    x = x_T
    for step in steps:
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        eps = guided_eps(net, x, t, labels, guidance_weight(step, w, guidance_interval), null_label)
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


Spacing = Literal["uniform", "quadratic"]


def ddim_timesteps(T: int, steps: int, spacing: Spacing = "uniform") -> list[int]:
    """The 0-based indices DDIM visits, descending from T - 1 (its first step) to 0 (steps > 1).

    "uniform": round(linspace(T - 1, 0, steps)), e.g. T=10, steps=4 -> [9, 6, 3, 0]; steps=T
    visits every index, steps=1 only T - 1. "quadratic" (DDIM appendix D.2): round((T - 1) *
    (i / (steps - 1))^2), pushed up where needed so the indices stay distinct; denser near t=0.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps={steps}: DDIM needs 1 <= steps <= T={T}")
    if spacing == "uniform":
        return torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long().tolist()
    if spacing != "quadratic":
        raise ValueError(f"spacing={spacing!r}: expected 'uniform' or 'quadratic'")
    ascending: list[int] = []
    for i in range(steps):
        t = round((T - 1) * (i / max(steps - 1, 1)) ** 2) if steps > 1 else T - 1
        ascending.append(max(t, ascending[-1] + 1) if ascending else t)
    return ascending[::-1]


@torch.no_grad()
def ddim_sample(
    net: nn.Module,
    schedule: NoiseSchedule,
    x_T: Tensor,
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    w: float,
    null_label: int,
    steps: int,
    eta: float = 0.0,
    clip_x0: bool = True,
    spacing: Spacing = "uniform",
    guidance_interval: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) over `steps` of the T indices, with guidance.

    eta=0 is deterministic given x_T; eta=1 with steps=T is DDPM ancestral sampling with the
    posterior variance. Guidance applies at the visited indices inside `guidance_interval`
    [t_lo, t_hi] (inclusive; None: all). x_T: (B, C, H, W); labels: (B,). Returns x_0 (in
    [-1, 1] when clip_x0).
    """
    if eta < 0:
        raise ValueError(f"eta={eta}: must be >= 0")
    visited = ddim_timesteps(schedule.T, steps, spacing)
    alpha_bars = schedule.alpha_bars.double().tolist()
    # The last step goes to "index -1", the clean data, where alpha_bar = 1.
    prev_of = dict(zip(visited, [*visited[1:], -1], strict=True))
    timesteps: Iterable[int] = progress(visited) if progress is not None else visited
    x = x_T
    for t in timesteps:
        a_t, a_prev = alpha_bars[t], alpha_bars[prev_of[t]] if prev_of[t] >= 0 else 1.0
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(
            net, x, t_batch, labels, guidance_weight(t, w, guidance_interval), null_label
        )
        x0 = schedule.predict_x0(x, t_batch, eps)
        if clip_x0:
            # Recompute eps from the clipped x0 so both terms of eq. 12 describe the same x0:
            # the update stays the posterior q_sigma(x_prev | x_t, x0) of eq. 7 for that x0.
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - a_t**0.5 * x0) / (1.0 - a_t) ** 0.5
        # sigma_t(eta), eq. 16: eta = 1 gives the DDPM posterior variance beta~_t.
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        x = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * torch.randn(
                x.shape, device=x.device, dtype=x.dtype, generator=generator
            )
    return x
