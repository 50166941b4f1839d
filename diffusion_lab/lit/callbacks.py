"""Callbacks that write what people look at: sample grids, loss curves; and the run config.

Everything here writes on global rank 0 only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor

from diffusion_lab.figures.curves import loss_curve_figure
from diffusion_lab.figures.fonts import wrap_overrides
from diffusion_lab.figures.grids import class_grid, class_grid_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.lit.ema import WarmupEMA
from diffusion_lab.runs.data_spec import DataSpec
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.tracking import tags
from diffusion_lab.tracking.loggers import log_figure
from diffusion_lab.tracking.loss_history import HISTORY_FILE, LossHistory, write_loss_history
from diffusion_lab.tracking.tensorboard import scalar_step
from diffusion_lab.utils.progress import images_per_step, progress_bar


def job_overrides() -> str:
    """The Hydra job's overrides as in its sweep folder name (`beta_T=0.01`); paths are left
    out (`hydra.job.config.override_dirname.exclude_keys`). Empty outside a Hydra job."""
    return HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""


def describe_sampler(sampler: Callable[..., Tensor], T: int) -> str:
    """`ancestral sampler, 500 steps, w=1.8` for a sampler partial from conf/sampler/."""
    keywords = getattr(sampler, "keywords", {})
    name = getattr(sampler, "func", sampler).__name__.removesuffix("_sample")
    text = f"{name} sampler, {keywords.get('steps', T)} steps"
    return f"{text}, w={keywords['w']}" if "w" in keywords else text


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
        self.write(trainer, pl_module, f"step{trainer.global_step:07d}", epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ema = next((cb for cb in trainer.callbacks if isinstance(cb, WarmupEMA)), None)
        with ema.averaged_weights(pl_module) if ema is not None else contextlib.nullcontext():
            # The loop has ended: current_epoch counts the epochs done.
            self.write(trainer, pl_module, "final", trainer.current_epoch)

    def write(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, tag: str, epoch: int
    ) -> None:
        """Sample on rank 0, save `samples_<tag>.png` and log the same labelled figure."""
        if not trainer.is_global_zero:
            return
        run = TrainedRun(pl_module, DataSpec.of_datamodule(trainer.datamodule))
        labels = torch.arange(run.spec.num_classes, device=pl_module.device)
        count = run.spec.num_classes * self.per_class
        # Sample in the trainer's precision (e.g. bf16 autocast), as the network was trained.
        with (
            progress_bar(count, f"sampling grid, epoch {epoch}", leave=False) as bar,
            trainer.precision_plugin.forward_context(),
        ):
            images = run.sample(
                labels.repeat_interleave(self.per_class),
                self.seed,
                self.sampler,
                progress=images_per_step(bar, count),
            )
        weights = "EMA weights" if uses_ema(trainer) else "live weights"
        title = (
            f"epoch {epoch} ({trainer.global_step} optimizer steps), "
            f"{describe_sampler(self.sampler, pl_module.schedule.T)}, {weights}"
        )
        if overrides := job_overrides():
            title += f"\n{wrap_overrides(overrides)}"
        grid = class_grid(images, self.per_class)
        names = run.spec.class_names or [str(k) for k in range(run.spec.num_classes)]
        fig = class_grid_figure(grid, names, title)
        save_figure(fig, self.output_dir / f"samples_{tag}.png")
        log_figure(trainer.loggers, tags.SAMPLE_GRID, fig, scalar_step(trainer))


class LossCurve(pl.Callback):
    """Keeps the per-step training loss and per-epoch validation loss; writes `loss_curve.png`
    and `loss_history.csv` (see `diffusion_lab.tracking.loss_history`) after every validation, at
    every checkpoint and at the end.

    Every step's loss also goes to the loggers as `train/loss`, at the step Lightning logs that
    step's other scalars (its 0-based index), from the tensors kept on the device: one host read
    per epoch instead of one per logged step. The history is part of the callback's checkpoint
    state, so a resumed run draws the whole curve (and logs only its own steps).
    """

    def __init__(self, output_dir: str, ylabel: str = "MSE on eps") -> None:
        self.path = Path(output_dir) / "loss_curve.png"
        self.history_path = Path(output_dir) / HISTORY_FILE
        self.ylabel = ylabel
        self.train_steps: list[int] = []
        self.train_losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        self._pending: list[Tensor] = []
        self._logged = 0  # how many of train_losses the loggers have

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
        self.log_new_losses(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        val_loss = trainer.callback_metrics.get(tags.VAL_LOSS)
        if trainer.sanity_checking or val_loss is None:
            return
        self.val_steps.append(trainer.global_step)
        self.val_losses.append(float(val_loss))
        self.write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer)
        self.log_new_losses(trainer)

    def log_new_losses(self, trainer: pl.Trainer) -> None:
        """Send the losses of the steps since the last call to the loggers as `train/loss`."""
        self._flush()
        new = range(self._logged, len(self.train_losses))
        for logger in trainer.loggers:
            for i in new:
                logger.log_metrics({tags.TRAIN_LOSS: self.train_losses[i]}, self.train_steps[i] - 1)
        self._logged = len(self.train_losses)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # A run stopped after this checkpoint still leaves its history up to it on disk and in
        # the loggers: a resume from it purges the later steps and logs from here on.
        self.log_new_losses(trainer)
        if trainer.is_global_zero:
            write_loss_history(self.history(), self.history_path)

    def history(self) -> LossHistory:
        """The history kept so far (call `_flush` first)."""
        return LossHistory(self.train_steps, self.train_losses, self.val_steps, self.val_losses)

    def write(self, trainer: pl.Trainer) -> None:
        self._flush()
        if trainer.is_global_zero:
            val_label = "validation (EMA weights)" if uses_ema(trainer) else "validation"
            fig = loss_curve_figure(*self.history(), val_label, self.ylabel)
            save_figure(fig, self.path)
            write_loss_history(self.history(), self.history_path)

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
        self._logged = len(self.train_losses)  # logged by the run that wrote the checkpoint


class EpochScalars(pl.Callback):
    """Logs epoch-level metrics again against the epoch: `val/acc` as `val_by_epoch/acc` at
    step = epochs done (1 after the first epoch).

    Runs whose epochs have different numbers of steps (a classifier on real data against one on
    real + generated data) line up on this axis, not on the optimizer step.
    """

    def __init__(self, metrics: Sequence[str] = (tags.VAL_ACC, tags.VAL_LOSS)) -> None:
        self.metrics = list(metrics)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        found = [k for k in self.metrics if k in trainer.callback_metrics]
        values = {tags.by_epoch(k): float(trainer.callback_metrics[k]) for k in found}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.current_epoch + 1)


class Throughput(pl.Callback):
    """Training images per second from the start of the second epoch to the end of the last.

    The first epoch is left out because it pays for compilation and kernel autotuning; the
    rest includes everything an epoch does (validation, EMA, logging, periodic sample grids and
    checkpoints). The final sample grid, drawn once after the last epoch, is not included.
    Not Lightning's ThroughputMonitor: it synchronises a GPU after every step, leaves validation
    out and logs a rate over a window of recent steps; the study reports one rate per run.
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
