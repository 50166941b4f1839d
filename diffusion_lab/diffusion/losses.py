"""The simplified DDPM training objective (Ho et al. 2020, eq. 14)."""

from __future__ import annotations

from torch import Tensor, nn

from diffusion_lab.diffusion.schedules import NoiseSchedule


def eps_mse(
    net: nn.Module, schedule: NoiseSchedule, x0: Tensor, t: Tensor, eps: Tensor, labels: Tensor
) -> Tensor:
    """Per-sample || eps - eps_theta(x_t, t, y) ||^2 averaged over pixels, shape (B,).

    x0: clean images (B, C, H, W) in [-1, 1]; t: 0-based step indices (B,); eps: N(0, I) noise.
    Per-sample values let the caller weight them or bucket them by t.
    """
    xt = schedule.q_sample(x0, t, eps)
    return (net(xt, t, labels) - eps).pow(2).flatten(1).mean(dim=1)
