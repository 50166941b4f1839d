"""Part 1 of the study: the class-conditional DDPM, trained to its share of the budget."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from diffusion_lab.config.sampler import sampler_nfe
from diffusion_lab.stages import compose
from diffusion_lab.stages.context import StageContext
from diffusion_lab.stages.training import run_training, sized_steps, with_budget, with_length

# Kept free after the last step for the final sample grid and checkpoint, as a share of the run.
FINAL_RESERVE = 0.05
TRAINING_STEP_FORWARDS = 3


def final_grid_s(cfg: DictConfig, probe: dict[str, float]) -> float:
    """The final sample grid's time, from the probe: a training step costs about three
    forward passes of its batch (forward and backward)."""
    grid = cfg.callbacks.get("sample_grid")
    if grid is None:
        return 0.0
    images = grid.per_class * cfg.data.num_classes
    evals_per_s = TRAINING_STEP_FORWARDS * cfg.batch_size / probe["step_s"]
    return images * sampler_nfe(cfg.sampler, cfg.T, cfg.w) / evals_per_s


def train_stage(ctx: StageContext) -> dict[str, Any]:
    """Train Part 1: the full recipe, or as many steps as its deadline allows (`TrainingBudget`),
    continuing an interrupted run at the length it had chosen."""
    run_dir = ctx.folder.path("train")
    cfg = compose.train_config(run_dir)
    deadline = ctx.budget.deadline("train")
    chosen = sized_steps(run_dir)
    if chosen is not None:
        with_length(cfg, chosen)
    elif deadline is not None:
        probe = ctx.probe
        seconds = ctx.budget.seconds_left("train")
        with_length(cfg, max(probe["steps_per_epoch"], int(seconds / probe["step_s"])))
        with_budget(
            cfg,
            deadline,
            probe["steps_per_epoch"],
            final_grid_s(cfg, probe) + FINAL_RESERVE * seconds,
        )
    record = run_training(cfg, run_dir)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    record.update(
        num_classes=cfg.data.num_classes,
        train_images=len(datamodule.train_set) + len(datamodule.val_set),
        batch_size=cfg.batch_size,
    )
    return record
