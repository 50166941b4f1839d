"""Noise (beta) schedules and the DDPM coefficients derived from them.

Conventions (Ho et al. 2020, "DDPM"): `t` is a 0-based index into the schedule, so
`betas[0]` is beta_1 of the paper and `betas[T - 1]` is beta_T. `alpha_bars[t]` is the
product of (1 - beta) over steps 0..t, i.e. the signal kept after t + 1 noising steps.
Everything is computed in float64 and stored as float32 buffers. The betas themselves come
from the named schedules in `betas.py`.

A named schedule never changes once released, so old results stay reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def gather(coefficients: Tensor, t: Tensor, ndim: int) -> Tensor:
    """coefficients[t] for indices t (B,), shaped (B, 1, ..., 1) to broadcast over ndim dims."""
    return coefficients[t].reshape(-1, *([1] * (ndim - 1)))


class NoiseSchedule(nn.Module):
    """Precomputed coefficients of the forward process q(x_t | x_0) and its posterior.

    Buffers are non-persistent: a checkpoint holds weights only, the schedule is rebuilt
    from the config, so a changed schedule can never be silently loaded from a checkpoint.
    """

    betas: Tensor
    alphas: Tensor
    alpha_bars: Tensor
    alpha_bars_prev: Tensor
    sqrt_alpha_bars: Tensor
    sqrt_one_minus_alpha_bars: Tensor
    posterior_variance: Tensor
    posterior_coef_x0: Tensor
    posterior_coef_xt: Tensor
    snr: Tensor

    def __init__(self, betas: Tensor) -> None:
        super().__init__()
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(
                f"betas must be a 1-D tensor of length >= 2, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        alphas = 1.0 - betas
        alpha_bars = torch.cumprod(alphas, dim=0)
        alpha_bars_prev = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])
        # Posterior q(x_{t-1} | x_t, x_0) = N(coef_x0 x0 + coef_xt xt, posterior_variance), eq. 6-7
        posterior_variance = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
        coefficients = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bars": alpha_bars,
            "alpha_bars_prev": alpha_bars_prev,
            "sqrt_alpha_bars": alpha_bars.sqrt(),
            "sqrt_one_minus_alpha_bars": (1.0 - alpha_bars).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_coef_x0": betas * alpha_bars_prev.sqrt() / (1.0 - alpha_bars),
            "posterior_coef_xt": (1.0 - alpha_bars_prev) * alphas.sqrt() / (1.0 - alpha_bars),
            "snr": alpha_bars / (1.0 - alpha_bars),
        }
        for name, value in coefficients.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return len(self.betas)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I), eq. 4."""
        return (
            gather(self.sqrt_alpha_bars, t, x0.ndim) * x0
            + gather(self.sqrt_one_minus_alpha_bars, t, x0.ndim) * eps
        )

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert eq. 4 given eps: x0 = (xt - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        return (xt - gather(self.sqrt_one_minus_alpha_bars, t, xt.ndim) * eps) / gather(
            self.sqrt_alpha_bars, t, xt.ndim
        )

    def posterior_mean(self, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x_0), eq. 7."""
        return (
            gather(self.posterior_coef_x0, t, xt.ndim) * x0
            + gather(self.posterior_coef_xt, t, xt.ndim) * xt
        )
