"""Callbacks that write what people look at: sample grids, loss curves; and the run config.

Everything here writes on global rank 0 only.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor
from tqdm.auto import tqdm

from diffusion_lab.lit.ema import WarmupEMA
from diffusion_lab.lit.run import DataSpec, TrainedRun
from diffusion_lab.plotting import class_grid, class_grid_figure, loss_curve_figure, save_figure


def tensorboard_writers(trainer: pl.Trainer) -> list[Any]:
    """The SummaryWriters of the trainer's TensorBoard loggers."""
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def uses_ema(trainer: pl.Trainer) -> bool:
    """Whether a weight-averaging callback swaps averaged weights in for validation."""
    return any(isinstance(cb, WeightAveraging) for cb in trainer.callbacks)


class SampleGrid(pl.Callback):
    """Samples `per_class` images of every class from fixed noise and writes them as a grid.

    Runs after every `every_n_epochs`-th validation (where the EMA callback has swapped the
    averaged weights in, so it must come before the EMA callback in the callback list) and
    once at the end of training, with the averaged weights swapped in. The final grid is drawn
    in `on_train_end`, not `on_fit_end`: Lightning's teardown moves the module to the CPU in
    between, and 500 guided steps there take minutes to hours.
    The noise is the same every time, so grids from different epochs are comparable.
    """

    def __init__(
        self,
        sampler: Callable[..., Tensor],
        output_dir: str,
        every_n_epochs: int = 10,
        per_class: int = 8,
        seed: int = 0,
    ) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("per_class", per_class)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer")
        self.sampler = sampler
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.per_class = per_class
        self.seed = seed

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        averaging = [i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, WeightAveraging)]
        if averaging and averaging[0] < trainer.callbacks.index(self):
            raise ValueError(
                "SampleGrid must come before the EMA callback in the callback list: it samples "
                "at the end of validation, before the averaged weights are swapped back out"
            )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        # The last epoch's grid would repeat the final one written in on_train_end.
        if trainer.sanity_checking or epoch % self.every_n_epochs or epoch == trainer.max_epochs:
            return
        self.write(trainer, pl_module, f"step{trainer.global_step:07d}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ema = next((cb for cb in trainer.callbacks if isinstance(cb, WarmupEMA)), None)
        with ema.averaged_weights(pl_module) if ema is not None else contextlib.nullcontext():
            self.write(trainer, pl_module, "final")

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str) -> None:
        """Sample on rank 0, save `samples_<tag>.png` and log the grid to TensorBoard."""
        if not trainer.is_global_zero:
            return
        run = TrainedRun(pl_module, DataSpec.of_datamodule(trainer.datamodule))
        labels = torch.arange(run.spec.num_classes, device=pl_module.device)
        progress = functools.partial(
            tqdm, desc="sampling grid", leave=False, unit="step", disable=None
        )
        # Sample in the trainer's precision (e.g. bf16 autocast), as the network was trained.
        with trainer.precision_plugin.forward_context():
            images = run.sample(
                labels.repeat_interleave(self.per_class), self.seed, self.sampler, progress=progress
            )
        weights = "EMA weights" if uses_ema(trainer) else "live weights"
        title = f"after {trainer.global_step} optimizer steps, {weights}"
        grid = class_grid(images, self.per_class)
        names = run.spec.class_names or [str(k) for k in range(run.spec.num_classes)]
        save_figure(class_grid_figure(grid, names, title), self.output_dir / f"samples_{tag}.png")
        for writer in tensorboard_writers(trainer):
            writer.add_image("samples/per_class", grid, trainer.global_step)


class LossCurve(pl.Callback):
    """Keeps the per-step training loss and per-epoch validation loss; writes `loss_curve.png`.

    The history is part of the callback's checkpoint state, so a resumed run draws the whole curve.
    """

    def __init__(self, output_dir: str, ylabel: str = "MSE on eps") -> None:
        self.path = Path(output_dir) / "loss_curve.png"
        self.ylabel = ylabel
        self.train_steps: list[int] = []
        self.train_losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        self._pending: list[Tensor] = []

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Keep tensors and convert once per epoch: .item() every step would stall a GPU.
        self._pending.append(outputs["loss"].detach())
        self.train_steps.append(trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        val_loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or val_loss is None:
            return
        self.val_steps.append(trainer.global_step)
        self.val_losses.append(float(val_loss))
        self.write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer)

    def write(self, trainer: pl.Trainer) -> None:
        self._flush()
        if trainer.is_global_zero:
            val_label = "validation (EMA weights)" if uses_ema(trainer) else "validation"
            fig = loss_curve_figure(
                self.train_steps,
                self.train_losses,
                self.val_steps,
                self.val_losses,
                val_label,
                self.ylabel,
            )
            save_figure(fig, self.path)

    def _flush(self) -> None:
        if self._pending:
            self.train_losses += torch.stack(self._pending).float().cpu().tolist()
            self._pending = []

    def state_dict(self) -> dict[str, list]:
        self._flush()
        return {
            "train_steps": self.train_steps,
            "train_losses": self.train_losses,
            "val_steps": self.val_steps,
            "val_losses": self.val_losses,
        }

    def load_state_dict(self, state_dict: dict[str, list]) -> None:
        for key, value in state_dict.items():
            setattr(self, key, list(value))


class Throughput(pl.Callback):
    """Training images per second from the start of the second epoch to the end of the last.

    The first epoch is left out because it pays for compilation and kernel autotuning; the
    rest includes everything an epoch does (validation, EMA, logging, periodic sample grids and
    checkpoints). The final sample grid, drawn once after the last epoch, is not included.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._steps_at_start = 0
        self.images_per_s: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None and trainer.current_epoch >= 1:
            self._start, self._steps_at_start = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None:
            return
        if pl_module.device.type == "cuda":  # once per epoch: wait for the queued steps
            torch.cuda.synchronize(pl_module.device)
        steps = trainer.global_step - self._steps_at_start
        batch_size = trainer.datamodule.batch_size * trainer.world_size
        self.images_per_s = steps * batch_size / (time.perf_counter() - self._start)
