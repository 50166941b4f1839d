"""Checks of the training config (train, study, bench), cheapest first: schedule, image size,
training settings, sampler, fast paths, trainer, callbacks, model."""

from __future__ import annotations

import functools
import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.config.checks import check_by_building, is_int, is_number, require, require_seed
from diffusion_lab.config.sampler import validate_sampler
from diffusion_lab.config.source import config_files
from diffusion_lab.config.trainer import validate_callbacks, validate_perf, validate_trainer
from diffusion_lab.diffusion import BETA_SCHEDULES
from diffusion_lab.nets import check_unet_geometry
from diffusion_lab.utils.errors import ConfigError

# Top-level keys that reach the noise schedule by interpolation; a schedule may ignore some.
SCHEDULE_KEYS = ("T", "beta_1", "beta_T")


def schedule_name(cfg: DictConfig) -> str:
    """The released name of the configured beta schedule (e.g. "cosine"), else its _target_."""
    target = str(OmegaConf.select(cfg, "schedule.betas._target_", default="?"))
    names = {fn.__name__: name for name, fn in BETA_SCHEDULES.items()}
    return names.get(target.rsplit(".", 1)[-1], target)


def used_schedule_keys(cfg: DictConfig) -> set[str]:
    """The SCHEDULE_KEYS that the (unresolved) schedule node interpolates, e.g. `${beta_T}`."""
    text = OmegaConf.to_yaml(cfg.schedule, resolve=False)
    return set(re.findall(r"\$\{\s*(\w+)\s*\}", text)) & set(SCHEDULE_KEYS)


@functools.cache
def primary_defaults() -> dict[str, Any]:
    """The top-level values written in conf/train.yaml (before any experiment or override)."""
    primary = OmegaConf.create(config_files().joinpath("train.yaml").read_text())
    return {key: primary.get(key) for key in SCHEDULE_KEYS}


def validate_ignored_keys(cfg: DictConfig) -> None:
    """A key set away from its default that the schedule ignores would make every job identical."""
    name, used = schedule_name(cfg), used_schedule_keys(cfg)
    for key in SCHEDULE_KEYS:
        require(
            key in used or cfg[key] == primary_defaults()[key],
            key,
            cfg[key],
            f"schedule={name} does not use {key}; drop the override "
            "(every job of a sweep would be identical)",
        )


def validate_schedule(cfg: DictConfig) -> None:
    """T, the betas the schedule uses, keys it ignores, then the betas it actually builds."""
    require(is_int(cfg.T) and cfg.T >= 2, "T", cfg.T, "must be an integer >= 2")
    validate_ignored_keys(cfg)
    used = used_schedule_keys(cfg)
    if "beta_1" in used:
        require(
            is_number(cfg.beta_1) and cfg.beta_1 > 0, "beta_1", cfg.beta_1, "must be a number > 0"
        )
    if "beta_T" in used:
        require(
            is_number(cfg.beta_T) and cfg.beta_T < 1, "beta_T", cfg.beta_T, "must be a number < 1"
        )
    if {"beta_1", "beta_T"} <= used:
        require(cfg.beta_1 < cfg.beta_T, "beta_1", cfg.beta_1, f"must be < beta_T={cfg.beta_T!r}")
    try:
        instantiate(cfg.schedule)
    except InstantiationException as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise ConfigError(f"schedule={schedule_name(cfg)}: {cause}") from None


def validate_image_size(cfg: DictConfig) -> None:
    """img_size must be a size the UNet can halve len(ch_mult) - 1 times."""
    require(
        is_int(cfg.img_size) and cfg.img_size > 0,
        "img_size",
        cfg.img_size,
        "must be a positive integer",
    )
    try:
        check_unet_geometry(cfg.img_size, list(cfg.model.ch_mult))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate_training(cfg: DictConfig) -> None:
    """Batch size, epochs, learning rate, guidance and EMA settings."""
    for key in ("batch_size", "data.batch_size"):
        value = OmegaConf.select(cfg, key)
        require(is_int(value) and value > 0, key, value, "must be a positive integer")
    require(
        is_int(cfg.epochs) and cfg.epochs > 0, "epochs", cfg.epochs, "must be a positive integer"
    )
    require(is_number(cfg.lr) and cfg.lr > 0, "lr", cfg.lr, "must be a number > 0")
    require(
        is_number(cfg.p_uncond) and 0 <= cfg.p_uncond < 1,
        "p_uncond",
        cfg.p_uncond,
        "must lie in [0, 1)",
    )
    require(is_number(cfg.w) and cfg.w >= 0, "w", cfg.w, "must be a number >= 0")
    require_seed(cfg.seed)


def validate_train_config(cfg: DictConfig) -> None:
    """Every check of the training config, cheapest first."""
    validate_schedule(cfg)
    validate_image_size(cfg)
    validate_training(cfg)
    validate_sampler(cfg.sampler, cfg.T)
    validate_perf(cfg)
    validate_trainer(cfg)
    validate_callbacks(cfg)
    check_by_building(cfg.model, "model")
