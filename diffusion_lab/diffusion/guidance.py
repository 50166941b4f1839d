"""Classifier-free guidance (Ho & Salimans 2022): label dropout in training, mixing at sampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def drop_labels(
    labels: Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None = None
) -> Tensor:
    """Replace each label by `null_label` independently with probability `p_uncond`."""
    if p_uncond <= 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device, generator=generator) < p_uncond
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def guided_eps(
    net: nn.Module, xt: Tensor, t: Tensor, labels: Tensor, w: float, null_label: int
) -> Tensor:
    """eps = (1 + w) * eps(x, y) - w * eps(x, null), both halves from ONE batched forward pass.

    w = 0 is the plain conditional model and skips the unconditional half. The result has
    xt's dtype: under autocast the network answers in bf16, and the mix, which amplifies the
    difference of two close predictions by w, is taken in xt's (float32) precision.
    """
    if w == 0:
        return net(xt, t, labels).to(xt.dtype)
    null = torch.full_like(labels, null_label)
    eps_cond, eps_null = (
        net(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([labels, null])).to(xt.dtype).chunk(2)
    )
    return (1 + w) * eps_cond - w * eps_null


def guidance_weight(t: int, w: float, interval: Sequence[int] | None) -> float:
    """The guidance weight at index t: w inside the guidance interval, 0 outside it.

    `interval` is [t_lo, t_hi] in 0-based schedule indices, both ends included; None guides at
    every t. Kynkäänniemi et al. 2024 guide only in a middle band of noise levels: guidance at
    high noise pulls the samples towards few modes, at low noise it does little. Outside the band
    the sampler takes the conditional eps (w = 0 in `guided_eps`: one network pass, not two).
    """
    if interval is None:
        return w
    t_lo, t_hi = interval
    return w if t_lo <= t <= t_hi else 0.0
