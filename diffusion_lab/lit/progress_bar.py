"""Training progress: on a terminal, Lightning's bar with the time left for the whole run
beside the epoch's; off one (a job log, SLURM, `| tee`), one log line per interval instead of
bar frames and cursor codes."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from tqdm import tqdm

from diffusion_lab.utils import progress

log = logging.getLogger(__name__)


def run_progress_bar(refresh_rate: int = 1) -> ProgressBar:
    """The progress callback for where the output goes (refresh_rate 0: none shown)."""
    if sys.stdout.isatty():
        return RunProgressBar(refresh_rate)
    return RunProgressLog(enabled=refresh_rate > 0)


def remaining_s(elapsed_s: float, steps_done: int, steps_left: int) -> float | None:
    """Seconds left at the rate so far (validation, grids included); None before a step."""
    return elapsed_s / steps_done * steps_left if steps_done > 0 else None


class RunProgressBar(TQDMProgressBar):
    """TQDMProgressBar whose postfix adds `run_eta`: the whole run's remaining time, from the
    time per optimizer step since training started (a resumed run counts from its resume)."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False):
        super().__init__(refresh_rate, process_position, leave)
        self._started: tuple[float, int] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._started = (time.monotonic(), trainer.global_step)

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        if self._started is not None:
            start, first_step = self._started
            left = remaining_s(
                time.monotonic() - start,
                trainer.global_step - first_step,
                int(trainer.estimated_stepping_batches) - trainer.global_step,
            )
            if left is not None:
                metrics["run_eta"] = tqdm.format_interval(left)
        return metrics


class RunProgressLog(ProgressBar):
    """Off a terminal: a log line at most every `utils.progress.LOG_EVERY_S` seconds of
    training, and one at its end: epoch, step, the progress-bar metrics and the run's ETA."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self._enabled = enabled
        self._started: tuple[float, int] | None = None
        self._last_line = 0.0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = (time.monotonic(), trainer.global_step)
        self._last_line = time.monotonic()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any
    ) -> None:
        if self._enabled and time.monotonic() - self._last_line >= progress.LOG_EVERY_S:
            self._last_line = time.monotonic()
            log.info(self.line(trainer, pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            log.info(self.line(trainer, pl_module))

    def line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """`epoch 3/70, step 120/1530 (8 %), train/loss 0.0452, 01:02 elapsed, ETA 12:10`."""
        total = int(trainer.estimated_stepping_batches)
        step = trainer.global_step
        # 1-based, as the bar counts; after the last epoch current_epoch is already max_epochs.
        max_epochs = trainer.max_epochs if (trainer.max_epochs or -1) > 0 else None
        epoch = trainer.current_epoch
        epoch += 1 if max_epochs is None or epoch < max_epochs else 0
        parts = [f"epoch {epoch}" + (f"/{max_epochs}" if max_epochs else "")]
        parts.append(f"step {step}/{total} ({100 * step / max(total, 1):.0f} %)")
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        parts += [
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
        ]
        if self._started is not None:
            start, first_step = self._started
            elapsed = time.monotonic() - start
            parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
            left = remaining_s(elapsed, step - first_step, total - step)
            if left is not None:
                parts.append(f"ETA {tqdm.format_interval(left)}")
        return ", ".join(parts)
