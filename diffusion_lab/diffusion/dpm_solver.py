"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a multistep second-order
solver of the probability-flow ODE in data prediction (x0), on the DDPM's discrete schedule.

The DDPM's discrete schedule gives, at a 0-based index t, alpha_t = sqrt(alpha_bar_t),
sigma_t = sqrt(1 - alpha_bar_t) and the half log-SNR lambda_t = log(alpha_t / sigma_t),
decreasing in t; the solver steps in lambda. Like diffusers' `DPMSolverMultistepScheduler`
(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"), which it matches
step by step (tests/test_dpm_solver.py), it evaluates the network only at trained indices, and
its last step goes to clean data (sigma = 0, lambda = +inf).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from diffusion_lab.diffusion.guidance import guidance_weight, guided_eps
from diffusion_lab.diffusion.samplers import Progress
from diffusion_lab.diffusion.schedules import NoiseSchedule

DPMSpacing = Literal["linspace", "leading", "trailing"]
DPM_SPACINGS: tuple[DPMSpacing, ...] = ("linspace", "leading", "trailing")


def spaced_indices(T: int, steps: int, spacing: DPMSpacing) -> list[int]:
    """The three spacings of Lin et al. 2024 (table 2), as diffusers' `timestep_spacing` has
    them for a solver whose last step goes to sigma = 0 (so one point more than visited):

    linspace: round(i (T - 1) / steps) for i = steps..1 (starts at T - 1, never visits 0);
    leading: i * floor(T / (steps + 1)) for i = steps..1;
    trailing: round(T - i T / steps) - 1 for i = 0..steps - 1 (starts at T - 1).
    The float arithmetic is numpy's linspace and arange, so ties round as diffusers' do.
    """
    if spacing == "linspace":
        step = (T - 1) / steps
        return [T - 1, *(round(i * step) for i in range(steps - 1, 0, -1))]
    if spacing == "leading":
        ratio = T // (steps + 1)
        return [i * ratio for i in range(steps, 0, -1)]
    if spacing == "trailing":
        # numpy's arange(T, 0, -T / steps) fills T + i * delta; diffusers sometimes gets one
        # element more from it (an index -1); exactly `steps` are kept here.
        delta = (T - T / steps) - T
        return [round(T + i * delta) - 1 for i in range(steps)]
    raise ValueError(f"spacing={spacing!r}: expected 'linspace', 'leading' or 'trailing'")


def dpm_timesteps(T: int, steps: int, spacing: DPMSpacing = "linspace") -> list[int]:
    """The `steps` distinct indices, descending, where DPM-Solver++ evaluates the network; after
    the last one it steps to clean data. E.g. T=10, steps=3: linspace [9, 6, 3], leading [6, 4, 2],
    trailing [9, 6, 2]."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps={steps}: DPM-Solver++ needs 1 <= steps <= T={T}")
    visited = spaced_indices(T, steps, spacing)
    if len(set(visited)) < steps:
        raise ValueError(
            f"steps={steps}: spacing={spacing!r} visits an index twice at T={T}; use fewer steps"
        )
    return visited


def log_snr_coefficients(schedule: NoiseSchedule) -> tuple[list[float], list[float], list[float]]:
    """alpha_t, sigma_t and lambda_t = log(alpha_t / sigma_t) per index t, in float64."""
    alpha_bars = schedule.alpha_bars.double()
    alphas, sigmas = alpha_bars.sqrt(), (1.0 - alpha_bars).sqrt()
    return alphas.tolist(), sigmas.tolist(), (alphas.log() - sigmas.log()).tolist()


@torch.no_grad()
def dpmpp_2m_sample(
    net: nn.Module,
    schedule: NoiseSchedule,
    x_T: Tensor,
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    w: float,
    null_label: int,
    steps: int = 20,
    spacing: DPMSpacing = "linspace",
    clip_x0: bool = True,
    guidance_interval: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """DPM-Solver++(2M) with classifier-free guidance: `steps` network evaluations (two passes
    each where guided), deterministic given x_T (`generator` is unused).

    The guided eps = (1 + w) eps(x, y) - w eps(x, null) is turned into the data prediction
    x0 = (x - sigma_t eps) / alpha_t, clipped to [-1, 1] when clip_x0 (static thresholding, which
    data prediction allows). Guidance applies at the visited indices inside `guidance_interval`
    [t_lo, t_hi] (inclusive; None: all). x_T: (B, C, H, W); labels: (B,). Returns x_0.
    """
    visited = dpm_timesteps(schedule.T, steps, spacing)
    alphas, sigmas, lambdas = log_snr_coefficients(schedule)
    indices: Iterable[int] = range(len(visited))
    if progress is not None:
        indices = progress(indices)
    x, x0_prev, h_prev = x_T, None, 0.0
    for i in indices:
        t = visited[i]
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(
            net, x, t_batch, labels, guidance_weight(t, w, guidance_interval), null_label
        )
        x0 = (x - sigmas[t] * eps) / alphas[t]
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        if i == len(visited) - 1:
            # The last step (to sigma = 0) is first order; exp(-h) = 0 lands it on x0.
            x = x0
            continue
        s = visited[i + 1]
        h = lambdas[s] - lambdas[t]
        # D: x0 alone on the first step (first order, i.e. DDIM); then the multistep estimate
        # (1 + 1 / 2r) x0 - (1 / 2r) x0_prev, r = h_prev / h (Algorithm 2).
        D = x0 if x0_prev is None else x0 + (h / (2.0 * h_prev)) * (x0 - x0_prev)
        # The exact solution of the ODE in data prediction, with x0 held at D over the step:
        # x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D.
        x = (sigmas[s] / sigmas[t]) * x - (alphas[s] * math.expm1(-h)) * D
        x0_prev, h_prev = x0, h
    return x
