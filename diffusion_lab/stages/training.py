"""The study's training runs: Part 1 sized to its budget, Part 3's runs at Part 1's length.

Before any work, a few eager steps of the configured module measure what one epoch costs here,
so that a budget too small for one epoch of every training run is refused in one line, and the
run starts with a sensible length (which `TrainingBudget` then corrects from the real rate).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from diffusion_lab.jobs.train import train
from diffusion_lab.lit.budget import BUDGET_FILE

log = logging.getLogger(__name__)
PROBE_STEPS = 4
# Validation forwards only (no backward): about a third of a training step per image.
VALIDATION_COST = 1 / 3


def last_checkpoint(run_dir: Path) -> Path | None:
    """A run's `last.ckpt`, where an interrupted run left one."""
    path = run_dir / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def sized_steps(run_dir: Path) -> int | None:
    """The length `TrainingBudget` chose for a run, if it chose one."""
    path = run_dir / BUDGET_FILE
    return json.loads(path.read_text())["steps"] if path.is_file() else None


def probe_epoch_seconds(cfg: DictConfig) -> dict[str, float]:
    """Seconds per training step and per epoch (validation included, estimated), measured on
    PROBE_STEPS eager steps after one untimed step, with nothing written."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = instantiate(cfg.module, compile=False)
    timer = _StepTimer()
    with tempfile.TemporaryDirectory() as scratch, quiet_lightning():
        trainer = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            precision=cfg.trainer.precision,
            max_steps=PROBE_STEPS + 1,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            default_root_dir=scratch,
        )
        trainer.fit(module, datamodule=datamodule)
    step_s = timer.seconds_per_step()
    steps_per_epoch = len(datamodule.train_set) // cfg.batch_size
    val_images = len(datamodule.val_set) if datamodule.val_set is not None else 0
    validation_s = step_s * VALIDATION_COST * val_images / cfg.batch_size
    return {
        "step_s": step_s,
        "steps_per_epoch": steps_per_epoch,
        "epoch_s": steps_per_epoch * step_s + validation_s,
    }


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines (devices, `max_steps` reached) off for a run nobody asked for."""
    lightning = logging.getLogger("pytorch_lightning")
    level = lightning.level
    lightning.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lightning.setLevel(level)


class _StepTimer(pl.Callback):
    """Times the training steps after the first."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.steps += 1
        self.end = time.perf_counter()

    def seconds_per_step(self) -> float:
        return (self.end - self.start) / max(self.steps, 1)


def smallest_budget_minutes(
    epoch_s: float, training_share: float, reserve_s: float, elapsed_s: float
) -> float:
    """The budget (minutes) whose Part 1 share holds one epoch, rounded up to 0.1 minute."""
    return math.ceil((reserve_s + elapsed_s + epoch_s / training_share) / 6) / 10


def with_length(cfg: DictConfig, steps: int) -> None:
    """Train for exactly `steps` optimizer steps (epochs no longer end the run)."""
    with open_dict(cfg):
        cfg.trainer.max_steps = steps
        cfg.trainer.max_epochs = -1


def with_budget(cfg: DictConfig, deadline: float, min_steps: int, reserve_s: float) -> None:
    """Let the run size itself to end by `deadline` (see `TrainingBudget`)."""
    with open_dict(cfg):
        cfg.callbacks.budget = {
            "_target_": "diffusion_lab.lit.budget.TrainingBudget",
            "deadline": deadline,
            "reserve_s": reserve_s,
            "min_steps": min_steps,
            "record_dir": cfg.output_dir,
        }


def run_training(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """`train(cfg)` in `run_dir`, resumed from its last.ckpt where one exists."""
    ckpt = last_checkpoint(run_dir)
    if ckpt is not None:
        log.info("resuming %s from %s", run_dir, ckpt)
        with open_dict(cfg):
            cfg.ckpt_path = str(ckpt)
    start = time.perf_counter()
    metrics = train(cfg)
    wall_s = time.perf_counter() - start
    images = metrics["global_step"] * cfg.batch_size
    return {
        "metrics": metrics,
        "steps": metrics["global_step"],
        "wall_s": wall_s,
        "images_per_s": images / wall_s,
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
    }
