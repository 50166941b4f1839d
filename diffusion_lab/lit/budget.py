"""A training run sized to a wall-clock deadline from the throughput it measures.

The run starts with the number of steps it was launched with (an estimate). After `probe_steps`
timed steps (the first `skip_steps` pay for compilation and autotuning and are not timed) it
sets the number of optimizer steps S so that

    now + (S - k) / steps_per_s + validations(S) * validation_s + reserve_s <= deadline,

and gives the learning-rate schedule the same horizon S. The schedules in `lit/lr_schedules.py`
are defined in fractions of the run, so warm-up and decay stretch or shrink with it, and the
EMA (WarmupEMA: decay min(0.9999, (1 + n) / (10 + n)), an average over about the last ninth of
the steps) finishes with it: the run is sized, not cut off. The first validation is timed too;
when it ends while the run is still early (`resize_until`), S is set once more with its cost.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.optim.lr_scheduler import LambdaLR

from diffusion_lab.utils.files import atomic_path

BUDGET_FILE = "budget.json"


def steps_within(
    seconds_left: float, steps_per_s: float, steps_per_epoch: int, validation_s: float
) -> int:
    """Steps that fit into `seconds_left`, each finished epoch paying one validation."""
    seconds_per_epoch = steps_per_epoch / steps_per_s + validation_s
    epochs = max(seconds_left, 0.0) / seconds_per_epoch
    whole = math.floor(epochs)
    # The partial last epoch still ends with a validation: it gets what is left after it.
    rest = (epochs - whole) * seconds_per_epoch - validation_s
    return whole * steps_per_epoch + max(0, math.floor(rest * steps_per_s))


class TrainingBudget(pl.Callback):
    """Sizes the run to end by `deadline` (a `time.time()` value), `reserve_s` before it.

    Args:
        deadline: when training, its last validation and its final sample grid must be done.
        reserve_s: kept free before the deadline for what follows the last step (final sample
            grid, last checkpoint).
        min_steps: the run never shrinks below this many steps (at least 1).
        skip_steps, probe_steps: steps left out of the rate (compilation) and then timed.
        resize_until: the first validation may re-size the run only while fewer than this
            share of the planned steps are done (the schedule's warm-up is still young).
        record_dir: where `budget.json` (the decision and what it was based on) is written.
    """

    def __init__(
        self,
        deadline: float,
        reserve_s: float = 0.0,
        min_steps: int = 1,
        skip_steps: int = 3,
        probe_steps: int = 20,
        resize_until: float = 0.05,
        record_dir: str | None = None,
    ) -> None:
        if probe_steps < 1 or skip_steps < 0 or min_steps < 1:
            raise ValueError("probe_steps and min_steps must be >= 1, skip_steps >= 0")
        self.deadline = deadline
        self.reserve_s = reserve_s
        self.min_steps = min_steps
        self.skip_steps = skip_steps
        self.probe_steps = probe_steps
        self.resize_until = resize_until
        self.record_dir = Path(record_dir) if record_dir is not None else None
        self.steps: int | None = None
        self._timer_start: tuple[float, int] | None = None
        self._validation_s = 0.0  # spent validating since the timer started
        self._validation_start: float | None = None
        self._first_validation_s: float | None = None
        self._steps_per_s: float | None = None
        self.decisions: list[dict[str, Any]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.steps is not None:  # restored from a checkpoint: the run was sized already
            self.resize(trainer, pl_module, self.steps)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        step = trainer.global_step
        if self._timer_start is None and step >= self.skip_steps and self.steps is None:
            self._timer_start = (time.perf_counter(), step)
            self._validation_s = 0.0
        if self._timer_start is None or self._steps_per_s is not None:
            return
        start, start_step = self._timer_start
        if step - start_step >= self.probe_steps:
            elapsed = time.perf_counter() - start - self._validation_s
            self._steps_per_s = (step - start_step) / elapsed
            self.decide(trainer, pl_module, "probe")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._validation_start is None:
            return
        spent = time.perf_counter() - self._validation_start
        self._validation_s += spent
        self._validation_start = None
        if self._first_validation_s is not None:
            return
        self._first_validation_s = spent
        early = self.steps is not None and trainer.global_step < self.resize_until * self.steps
        if self._steps_per_s is not None and early:
            self.decide(trainer, pl_module, "first validation")

    def decide(self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str) -> None:
        """Set the run's length from the measured rates, and record why."""
        assert self._steps_per_s is not None
        per_epoch = max(1, int(trainer.num_training_batches))
        validation_s = self._first_validation_s or 0.0
        left = self.deadline - time.time() - self.reserve_s
        done = trainer.global_step
        more = steps_within(left, self._steps_per_s, per_epoch, validation_s)
        steps = max(self.min_steps, done + more, done + 1)
        self.decisions.append(
            {
                "reason": reason,
                "at_step": done,
                "steps": steps,
                "steps_per_s": self._steps_per_s,
                "validation_s": validation_s,
                "seconds_left": left,
            }
        )
        self.resize(trainer, pl_module, steps)
        self.write_record(trainer)

    def resize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, steps: int) -> None:
        """Make `steps` the run's length: the loop's max_steps and the lr schedule's horizon."""
        self.steps = steps
        trainer.fit_loop.epoch_loop.max_steps = steps
        trainer.fit_loop.max_epochs = -1  # the steps decide; epochs would cut the run short
        factory = getattr(pl_module, "lr_schedule_factory", None)
        if factory is None:
            return
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if not isinstance(scheduler, LambdaLR):
                continue
            base = [group["initial_lr"] for group in scheduler.optimizer.param_groups]
            # A fresh schedule of the new length lends its multipliers; it also resets the
            # learning rates, which are then set for the step the run is at.
            scheduler.lr_lambdas = factory(scheduler.optimizer, steps).lr_lambdas
            for group, lr0, factor in zip(
                scheduler.optimizer.param_groups, base, scheduler.lr_lambdas, strict=True
            ):
                group["lr"] = lr0 * factor(scheduler.last_epoch)

    def write_record(self, trainer: pl.Trainer) -> None:
        if self.record_dir is None or not trainer.is_global_zero:
            return
        record = {"steps": self.steps, "deadline": self.deadline, "decisions": self.decisions}
        with atomic_path(self.record_dir / BUDGET_FILE) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "decisions": self.decisions}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = state_dict.get("steps")
        self.decisions = list(state_dict.get("decisions", []))
