"""The study from start to report: check everything, then run the stages that have not finished.

Every setting, every stage's composed config, the data and the Inception weights are checked
before any work, so a bad input stops the study in one line before training. A stage that
fails stops the study with one line naming it; what earlier stages made stays, and rerunning
the same command continues from the failed stage.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.config.data import infer_num_classes
from diffusion_lab.stages import checks, compose
from diffusion_lab.stages.budget import STAGE_ORDER, Budget, stage_weights
from diffusion_lab.stages.context import StageContext, log
from diffusion_lab.stages.folder import StudyFolder
from diffusion_lab.stages.part1 import train_stage
from diffusion_lab.stages.part2 import PartSkipped, classify_stage, evaluate_stage, generate_stage
from diffusion_lab.stages.part3 import part3_stage, training_runs
from diffusion_lab.stages.report import write_report
from diffusion_lab.stages.training import probe_epoch_seconds, smallest_budget_minutes
from diffusion_lab.utils.errors import UserFacingError

STAGES: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "train": train_stage,
    "generate": generate_stage,
    "evaluate": evaluate_stage,
    "classify": classify_stage,
    "part3": part3_stage,
}
# Stages that need Part 2's set: left out together when the budget leaves no room for it.
PART2 = ("generate", "evaluate", "classify")
FAILURE_FILE = "failure.txt"


class StageFailed(UserFacingError):
    """A stage raised an unexpected error; its traceback is in the study folder."""

    exit_status = 1


def make_budget(cfg: DictConfig, started: float) -> Budget:
    """The stage deadlines of this study (none without budget_minutes)."""
    settings = cfg.study.budget
    weights = stage_weights(settings.weights, list(cfg.study.stages), training_runs(cfg))
    total = None if cfg.budget_minutes is None else 60.0 * cfg.budget_minutes
    return Budget(total, weights, settings.reserve_s, started)


def check_budget_holds_an_epoch(cfg: DictConfig, budget: Budget, probe: dict[str, float]) -> None:
    """Refuse, before training, a budget whose Part 1 share is shorter than one epoch."""
    left = budget.seconds_left("train")
    if left is None or left >= probe["epoch_s"]:
        return
    share = budget.weights["train"] / sum(budget.weights.values())
    elapsed = time.time() - budget.start
    smallest = smallest_budget_minutes(probe["epoch_s"], share, budget.reserve_s, elapsed)
    raise UserFacingError(
        f"budget_minutes={cfg.budget_minutes}: too small for one training epoch (about "
        f"{probe['epoch_s']:.0f} s here, measured) in Part 1's share of the budget; the "
        f"smallest budget that works is budget_minutes={smallest}"
    )


def run_stage(ctx: StageContext, stage: str) -> dict[str, Any]:
    """Run one stage and time it; an unexpected error becomes one line naming the stage."""
    ctx.notes = []
    start = time.perf_counter()
    try:
        record = STAGES[stage](ctx)
    except (PartSkipped, KeyboardInterrupt):
        raise
    except UserFacingError as err:
        named = UserFacingError(f"study stage {stage}: {err}")
        if hasattr(err, "exit_status"):  # an interrupted run keeps its signal's status
            named.exit_status = err.exit_status
        raise named from err
    except Exception as err:
        path = ctx.folder.path(FAILURE_FILE)
        path.write_text(traceback.format_exc())
        log.error("study stage %s failed", stage, exc_info=True)
        first = str(err).strip().splitlines()
        what = f"{type(err).__name__}: {first[0]}" if first else type(err).__name__
        raise StageFailed(
            f"study stage {stage} failed ({what}); traceback in {path}; earlier stages are "
            "kept: rerun the same command to continue from this stage"
        ) from err
    record.setdefault("wall_s", time.perf_counter() - start)
    record["stage_wall_s"] = time.perf_counter() - start
    record["notes"] = list(ctx.notes)
    return record


def run_study(cfg: DictConfig, started: float) -> Path:
    """Check, then run every unfinished stage in order, then write study.md; its path."""
    checks.validate_study_config(cfg)
    infer_num_classes(cfg.data)  # an image folder's classes, for every stage's config
    root = Path(cfg.output_dir)
    folder = StudyFolder(root, OmegaConf.to_container(cfg, resolve=True))
    budget = make_budget(cfg, started)
    stages = [s for s in STAGE_ORDER if s in cfg.study.stages and folder.finished(s) is None]
    folder.check(cfg.study.force_config)
    checks.check_inputs(cfg, stages)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ctx = StageContext(cfg, folder, budget, device)
    if "train" in stages and budget.total_s is not None:
        ctx.probe = probe_epoch_seconds(compose.train_config(root / "train"))
        check_budget_holds_an_epoch(cfg, budget, ctx.probe)
    folder.save_config()  # everything is checked: the first write
    skipped: list[str] = []
    for stage in stages:
        if stage in skipped:
            continue
        log.info("study: stage %s", stage)
        try:
            folder.record(stage, run_stage(ctx, stage))
        except PartSkipped:
            skipped += PART2
            for part in PART2:
                folder.record(part, {"skipped": True, "notes": list(ctx.notes)})
    return write_report(ctx, time.time() - started)
