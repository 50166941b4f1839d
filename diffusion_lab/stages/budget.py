"""How `study` splits a wall-clock budget over its stages.

The rule (docs and conf/study.yaml repeat it):

1. The budget counts from the moment the study starts. `study.budget.reserve_s` of it is kept
   for the report and the process start; the rest, U, is split by the stages' weights
   (`study.budget.weights`), over the stages the study includes.
2. Every training run (Part 1, and in Part 3 the cosine run and each new grid value) trains the
   same number of steps, so the training weight is divided equally among them: Part 1 gets
   1/n of it, Part 3 the rest.
3. Deadlines are cumulative: stage i must end by start + U * (weights of stages 1..i) / (all
   weights). Time an early stage leaves unused passes to the next; an overrun shrinks them.
4. Training sizes itself to its deadline from its measured throughput (`TrainingBudget`); every
   other stage estimates its cost before it starts and shrinks (sample count, epochs, seeds) or
   leaves out (grid values) what would not fit, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The order the stages run in; `report` always runs last and lives on the reserve.
STAGE_ORDER = ("train", "generate", "evaluate", "classify", "part3")


def stage_weights(
    weights: Mapping[str, float], included: Sequence[str], training_runs: int
) -> dict[str, float]:
    """Each included stage's weight; Part 3 gets the training weight of its extra runs."""
    per_run = weights["training"] / training_runs
    table = {
        "train": per_run,
        "generate": weights["generate"],
        "evaluate": weights["evaluate"],
        "classify": weights["classify"],
        "part3": per_run * (training_runs - 1),
    }
    return {stage: table[stage] for stage in STAGE_ORDER if stage in included}


@dataclass
class Budget:
    """Stage deadlines from a total budget (None: no deadlines, the full recipe)."""

    total_s: float | None
    weights: dict[str, float]
    reserve_s: float = 0.0
    start: float = field(default_factory=time.time)

    def deadline(self, stage: str) -> float | None:
        """The `time.time()` by which `stage` must be done (None without a budget)."""
        if self.total_s is None:
            return None
        usable = max(self.total_s - self.reserve_s, 0.0)
        order = list(self.weights)
        done_share = sum(self.weights[s] for s in order[: order.index(stage) + 1])
        return self.start + usable * done_share / sum(self.weights.values())

    def seconds_left(self, stage: str) -> float | None:
        """Seconds until `stage`'s deadline (None without a budget; may be negative)."""
        deadline = self.deadline(stage)
        return None if deadline is None else deadline - time.time()

    def fits(self, stage: str, seconds: float) -> bool:
        """Whether work estimated at `seconds` ends before `stage`'s deadline."""
        left = self.seconds_left(stage)
        return left is None or seconds <= left


def largest_fitting(count: int, seconds_each: float, seconds: float | None, least: int) -> int:
    """The largest n <= count with n * seconds_each <= seconds (at least `least`)."""
    if seconds is None or seconds_each <= 0:
        return count
    return max(least, min(count, int(seconds // seconds_each)))
