"""Lightning's progress bar with the time left for the whole run beside the epoch's."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from tqdm import tqdm


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
