"""Named beta schedules: functions of T (and their own parameters) returning float64 betas (T,).

`t` is a 0-based index: `betas[0]` is the paper's beta_1 and `betas[T - 1]` is beta_T.
Every function computes in float64. A named schedule never changes once released (tests pin
values of each), so old results stay reproducible; a new formula gets a new name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def linear_betas(T: int, beta_1: float, beta_T: float) -> Tensor:
    """DDPM's linear schedule (Ho et al. 2020): beta_t = linspace(beta_1, beta_T, T)."""
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def quadratic_betas(T: int, beta_1: float, beta_T: float) -> Tensor:
    """Linear in sqrt(beta): beta_t = linspace(sqrt(beta_1), sqrt(beta_T), T) ** 2.

    Ends at the same beta_1 and beta_T as `linear_betas` but stays lower in between, so it
    adds noise more slowly early on and keeps more signal at every step.
    """
    return torch.linspace(math.sqrt(beta_1), math.sqrt(beta_T), T, dtype=torch.float64) ** 2


def sigmoid_betas(T: int, beta_1: float, beta_T: float) -> Tensor:
    """beta_t = beta_1 + (beta_T - beta_1) * sigmoid(linspace(-6, 6, T)).

    The beta-space sigmoid of GeoDiff (Xu et al. 2022). Chosen over the alpha_bar-space
    sigmoid of Jabri et al. 2022 because it takes beta_1 and beta_T like `linear_betas`, so the
    study's beta grids sweep it too. The ends are sigmoid(-/+6) = 0.25 % / 99.75 % of the way
    from beta_1 to beta_T, not exactly beta_1 and beta_T.
    """
    ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, T, dtype=torch.float64))
    return beta_1 + (beta_T - beta_1) * ramp


def cosine_alpha_bar(u: Tensor, s: float) -> Tensor:
    """f(u) / f(0) with f(u) = cos^2(((u + s) / (1 + s)) * pi / 2), u = t / T in [0, 1]."""
    f_0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2 / f_0


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule of Nichol & Dhariwal 2021 (eq. 17): independent of beta_1 and beta_T.

    alpha_bar(u) = f(u) / f(0), f(u) = cos^2(((u + s) / (1 + s)) * pi / 2), and
    beta = 1 - alpha_bar(u) / alpha_bar(u - 1 / T), clipped at max_beta (near u = 1 the
    ratio goes to 0). Index t (0-based) is the paper's step t + 1, so betas[t] uses
    u = (t + 1) / T and, before clipping, prod(1 - betas[:t + 1]) = f((t + 1) / T) / f(0).
    """
    u = torch.arange(T + 1, dtype=torch.float64) / T
    alpha_bars = cosine_alpha_bar(u, s)
    betas = 1.0 - alpha_bars[1:] / alpha_bars[:-1]
    return betas.clamp(max=max_beta)


# The released schedules by the name of their `conf/schedule/<name>.yaml`.
BETA_SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "quadratic": quadratic_betas,
    "sigmoid": sigmoid_betas,
}
