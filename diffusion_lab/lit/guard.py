"""Stops training at a NaN or Inf loss or gradient, before any diverged weights are saved.

Reading a GPU value on the host waits for the GPU, so the check is split: every step records
on the device (no sync) the first step whose loss or gradient was not finite, and the host reads
that record only every `every_n_steps` steps, before each validation, before every checkpoint
is written and at the end of training. Training then stops with `TrainingDiverged`, naming the
first bad step and the last checkpoint this run wrote, which holds no diverged weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.optim import Optimizer

from diffusion_lab.utils.errors import UserFacingError

# The record is one int64: 4 * step + kind, so the smallest over ranks is the first bad step,
# its loss before its gradient; NONE means no bad step yet.
KINDS = ("the loss is nan", "the loss is inf", "a gradient is nan", "a gradient is inf")
NONE = torch.iinfo(torch.int64).max


class TrainingDiverged(UserFacingError):
    """The loss or a gradient became NaN or Inf; the run stopped without saving those weights."""


def all_finite(tensors: list[Tensor]) -> bool:
    """Whether every floating-point tensor holds only finite values (one sync)."""
    floats = [t.detach() for t in tensors if t.is_floating_point()]
    if not floats:
        return True
    # The max-abs norm overflows no sum of squares and is nan where any value is.
    return bool(torch.stack(torch._foreach_norm(floats, float("inf"))).max().isfinite())


class NonFiniteGuard(pl.Callback):
    """Records the first non-finite loss or gradient on the device; stops training when read.

    Args:
        every_n_steps: read the record every this many optimizer steps (a host sync each time);
            it is also read before validation, before every checkpoint and at the end of training.
        check_gradients: also check the gradients (one max-abs norm over them per step). Skipped
            under a gradient scaler (16-mixed), which skips steps with Inf gradients by design.
    """

    def __init__(self, every_n_steps: int = 50, check_gradients: bool = True) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps}: must be >= 1")
        self.every_n_steps = every_n_steps
        self.check_gradients = check_gradients
        self._first_bad: Tensor | None = None
        self._last_saved_step: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_bad = torch.tensor(NONE, device=pl_module.device)
        self._last_saved_step = None

    def record(self, step: int, value: Tensor, kind_offset: int) -> None:
        """Keep 4 * step + kind if `value` is not finite and no earlier step was (no sync)."""
        kind = kind_offset + (~value.isnan()).long()
        code = torch.where(value.isfinite(), NONE, 4 * step + kind)
        torch.minimum(self._first_bad, code, out=self._first_bad)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        self.record(trainer.global_step + 1, loss.detach().float(), 0)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if not self.check_gradients or getattr(trainer.precision_plugin, "scaler", None):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            largest = torch.stack(torch._foreach_norm(grads, float("inf"))).max()
            self.record(trainer.global_step + 1, largest.float(), 2)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.stop_if_diverged(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation and the sample grids would otherwise log NaN losses and black images.
        self.stop_if_diverged(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Raised before the file is written: the last checkpoint on disk stays the good one.
        self.stop_if_diverged(trainer)
        self._last_saved_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_if_diverged(trainer)

    def stop_if_diverged(self, trainer: pl.Trainer) -> None:
        """Raise TrainingDiverged if any rank recorded a bad step (every rank raises alike)."""
        if self._first_bad is None:
            return
        first = int(trainer.strategy.reduce(self._first_bad.clone(), reduce_op="min"))
        if first != NONE:
            step, kind = divmod(first, 4)
            raise TrainingDiverged(
                f"training diverged at step {step}: {KINDS[kind]}; {self.last_good(trainer)}"
            )

    def last_good(self, trainer: pl.Trainer) -> str:
        """Where the last checkpoint this run wrote lies, or that it wrote none."""
        saver = trainer.checkpoint_callback
        path = saver and (saver.last_model_path or saver.best_model_path)
        if self._last_saved_step is None or not path:
            return "this run wrote no checkpoint"
        return f"the last good checkpoint is {path} (step {self._last_saved_step})"
