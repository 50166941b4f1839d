"""An exponential moving average of the weights, on Lightning's WeightAveraging callback."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor, nn


def warmup_decay(decay: float, num_averaged: int) -> float:
    """min(decay, (1 + n) / (10 + n)) after n updates: the average forgets its start quickly."""
    return min(decay, (1 + num_averaged) / (10 + num_averaged))


def averaged_tensors(module: nn.Module) -> list[Tensor]:
    """The floating-point parameters and buffers of `module`, in AveragedModel's order."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return [t.detach() for t in tensors if t.is_floating_point()]


@torch.no_grad()
def ema_update_(ema: list[Tensor], current: list[Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * current, as one multi-tensor lerp per device."""
    torch._foreach_lerp_(ema, current, 1.0 - decay)


class WarmupEMA(WeightAveraging):
    """EMA of the weights, swapped in for validation and saved as the checkpoint's state_dict.

    A fixed decay of 0.9999 keeps about e^-1 of the initial weights after 10,000 steps, so
    samples from a short run (or early in a long one) look like the untrained network. With
    `warmup`, the decay is min(decay, (1 + n) / (10 + n)) after n updates, reaching 0.999 near
    update 9,000 and 0.9999 near 90,000; without it this is Lightning's EMAWeightAveraging.

    The average lives on the training device and the update is one fused lerp over all its
    tensors there. The update count is kept on the host too: AveragedModel.update_parameters
    reads its device counter, a GPU sync every step.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, **kwargs: Any) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay}: must lie in (0, 1)")
        super().__init__(**kwargs)
        self.decay = decay
        self.warmup = warmup
        self._num_updates: int | None = None
        self._paired: tuple[list[Tensor], list[Tensor]] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # The module is still on the CPU here, and WeightAveraging would keep the average where
        # the module is now: every update would then copy all weights off the GPU.
        if self._device is None:
            self._device = trainer.strategy.root_device
        self._paired = None  # the average is made anew here
        super().setup(trainer, pl_module, stage)

    def decay_after(self, num_updates: int) -> float:
        """The decay applied by the update that follows `num_updates` earlier ones."""
        return warmup_decay(self.decay, num_updates) if self.warmup else self.decay

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # One update per optimizer step, as in WeightAveraging (global_step counts them).
        if trainer.global_step > self._latest_update_step and self.should_update(
            step_idx=trainer.global_step - 1
        ):
            self.update_average(pl_module)
            self._latest_update_step = trainer.global_step

    def update_average(self, pl_module: pl.LightningModule) -> None:
        """Fold the current weights into the average: a copy first, then the EMA."""
        average = self._average_model
        assert average is not None, "update_average runs after setup('fit')"
        if self._num_updates is None:  # once per fit: after a resume the count is restored
            self._num_updates = int(average.n_averaged)
        ema, current = self.paired_tensors(pl_module)
        if self._num_updates == 0:
            torch._foreach_copy_(ema, current)
        else:
            ema_update_(ema, current, self.decay_after(self._num_updates))
        average.n_averaged.add_(1)  # kept for checkpoints; never read back per step
        self._num_updates += 1

    def paired_tensors(self, pl_module: pl.LightningModule) -> tuple[list[Tensor], list[Tensor]]:
        """The average's tensors and the module's, listed once per fit.

        Listing the study UNet's 349 tensors twice per step took 9 ms of host time on the
        2-core development CPU (loaded), more than the fused update itself. The lists stay
        valid: the swaps for validation copy values in place, and nothing replaces a parameter
        during a fit; the first parameter's storage is checked anyway, so a module moved
        elsewhere is listed again.
        """
        cached = self._paired
        if (
            cached is not None
            and cached[1][0].data_ptr() == next(pl_module.parameters()).data_ptr()
        ):
            return cached
        assert self._average_model is not None
        self._paired = (averaged_tensors(self._average_model.module), averaged_tensors(pl_module))
        return self._paired

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._num_updates = None
        self._paired = None

    @contextmanager
    def averaged_weights(self, pl_module: pl.LightningModule) -> Iterator[None]:
        """Swap the averaged weights into `pl_module` for the duration of the block."""
        if self._average_model is None:
            yield
            return
        self._swap_models(pl_module)
        try:
            yield
        finally:
            self._swap_models(pl_module)
