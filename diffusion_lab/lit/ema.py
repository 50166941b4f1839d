"""An exponential moving average of the weights, on Lightning's WeightAveraging callback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

MultiAvgFn = Callable[[Sequence[Tensor], Sequence[Tensor], Tensor], None]


def warmup_decay(decay: float, num_averaged: int) -> float:
    """min(decay, (1 + n) / (10 + n)) after n updates: the average forgets its start quickly."""
    return min(decay, (1 + num_averaged) / (10 + num_averaged))


def warmup_ema_update(decay: float) -> MultiAvgFn:
    """An AveragedModel `multi_avg_fn`: ema <- d ema + (1 - d) w with d = warmup_decay(decay, n)."""

    @torch.no_grad()
    def update(ema: Sequence[Tensor], current: Sequence[Tensor], num_averaged: Tensor) -> None:
        weight = 1.0 - warmup_decay(decay, int(num_averaged))
        floats = [(e, c) for e, c in zip(ema, current, strict=True) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], weight)

    return update


class WarmupEMA(WeightAveraging):
    """EMA of the weights, swapped in for validation and saved as the checkpoint's state_dict.

    A fixed decay of 0.9999 keeps about e^-1 of the initial weights after 10,000 steps, so
    samples from a short run (or early in a long one) look like the untrained network. With
    `warmup`, the decay is min(decay, (1 + n) / (10 + n)) after n updates, reaching 0.999 near
    update 9,000 and 0.9999 near 90,000; without it this is Lightning's EMAWeightAveraging.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, **kwargs: Any) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay}: must lie in (0, 1)")
        update = warmup_ema_update(decay) if warmup else get_ema_multi_avg_fn(decay)
        super().__init__(multi_avg_fn=update, **kwargs)
        self.decay = decay
        self.warmup = warmup
