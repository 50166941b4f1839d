"""Checks of the classifier config (classify), and of its batched stage (`modes`, `seeds`)."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from diffusion_lab.config.checks import (
    check_by_building,
    is_int,
    is_number,
    require,
    require_distinct_list,
    require_optional_count,
    require_seed,
)
from diffusion_lab.config.trainer import validate_callbacks, validate_perf, validate_trainer

CLASSIFY_MODES = ("auto", "real", "augmented", "synthetic")


def validate_classify_config(cfg: DictConfig, swept_modes: tuple[str, ...] = ()) -> None:
    """Every check of the classifier config, cheapest first.

    `swept_modes` are the modes the other jobs of this sweep will run: a missing generated set
    fails the first job, not the first job that needs it.
    """
    require(cfg.mode in CLASSIFY_MODES, "mode", cfg.mode, f"must be one of {CLASSIFY_MODES}")
    for mode in (cfg.mode, *swept_modes):
        require(
            cfg.synthetic is not None or mode not in ("augmented", "synthetic"),
            "synthetic",
            cfg.synthetic,
            f"mode={mode} needs a generated set: synthetic=PATH",
        )
    for key in ("batch_size", "epochs", "img_size"):
        value = cfg[key]
        require(is_int(value) and value > 0, key, value, "must be a positive integer")
    for key in ("generated_per_class", "real_per_class"):
        require_optional_count(cfg, key)
    require(is_number(cfg.lr) and cfg.lr > 0, "lr", cfg.lr, "must be a number > 0")
    smoothing = cfg.label_smoothing
    require(is_number(smoothing) and 0 <= smoothing < 1, "label_smoothing", smoothing, "in [0, 1)")
    padding = cfg.crop_padding
    require(is_int(padding) and padding >= 0, "crop_padding", padding, "must be an integer >= 0")
    require_seed(cfg.seed)
    validate_trainer(cfg)
    validate_callbacks(cfg)
    check_by_building(cfg.model, "model")


ENSEMBLE_MODES = ("real", "augmented", "synthetic")


def validate_ensemble_optimizer(cfg: DictConfig) -> None:
    """The batched stage runs Adam or AdamW (its own per-member update) and a LambdaLR schedule."""
    optimizer = instantiate(cfg.optimizer)([torch.zeros(1, requires_grad=True)])
    plain = isinstance(optimizer, torch.optim.Adam) and not any(
        optimizer.defaults.get(flag) for flag in ("amsgrad", "maximize")
    )
    target = cfg.optimizer._target_
    require(plain, "optimizer", target, "the batched stage runs Adam or AdamW (no amsgrad)")
    if cfg.get("lr_schedule") is not None:
        schedule = instantiate(cfg.lr_schedule)(optimizer, 1)
        ok = isinstance(schedule, torch.optim.lr_scheduler.LambdaLR)
        require(ok, "lr_schedule", cfg.lr_schedule._target_, "must give a LambdaLR")
    algorithm = cfg.trainer.get("gradient_clip_algorithm") or "norm"
    require(
        algorithm == "norm", "trainer.gradient_clip_algorithm", algorithm, "must be norm (or null)"
    )


def validate_ensemble_config(cfg: DictConfig, modes: Any, seeds: Any) -> None:
    """The batched classifier stage's members and settings (after validate_classify_config)."""
    require_distinct_list("modes", modes, f"modes ({', '.join(ENSEMBLE_MODES)})")
    for mode in modes:
        require(mode in ENSEMBLE_MODES, "modes", modes, f"{mode!r} is not one of {ENSEMBLE_MODES}")
        require(
            cfg.synthetic is not None or mode == "real",
            "synthetic",
            cfg.synthetic,
            f"mode={mode} needs a generated set: synthetic=PATH",
        )
    require_distinct_list("seeds", seeds, "seeds (integers >= 0)")
    for seed in seeds:
        require(is_int(seed) and seed >= 0, "seeds", seeds, "must be integers >= 0")
    target = str(cfg.model.get("_target_"))
    require(
        target.endswith(".MLP"), "model", target, "the batched stage trains MLPs (mlp, mlp_seed)"
    )
    devices = cfg.trainer.get("devices")
    require(devices == 1, "trainer.devices", devices, "the batched stage runs on one device: 1")
    validate_perf(cfg)
    validate_ensemble_optimizer(cfg)
