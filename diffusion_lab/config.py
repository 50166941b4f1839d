"""Config checks that run before anything is built: one line naming key, value, what is allowed."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, get_args

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from diffusion_lab.cli import config_files
from diffusion_lab.data.image_folder import NO_ROOT, ImageFolderDataModule, classes_of
from diffusion_lab.diffusion import BETA_SCHEDULES
from diffusion_lab.diffusion.nfe import SAMPLER_NAMES, network_evaluations, sampler_timesteps
from diffusion_lab.diffusion.samplers import Variance
from diffusion_lab.errors import ConfigError, DataError
from diffusion_lab.nets import check_unet_geometry
from diffusion_lab.nets.speed import COMPILE_MODES


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(`key=value: allowed`) unless ok."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def require_seed(seed: Any) -> None:
    require(is_int(seed) and seed >= 0, "seed", seed, "must be an integer >= 0")


def sampler_name(sampler: DictConfig) -> str:
    """`ddim` for the sampler node whose _target_ is diffusion_lab.diffusion.ddim_sample."""
    return str(sampler._target_).rsplit(".", 1)[-1].removesuffix("_sample")


def index_settings(sampler: DictConfig) -> dict[str, Any]:
    """The keys of the node that choose the visited indices (`steps`, `spacing`)."""
    return {key: sampler[key] for key in ("steps", "spacing") if key in sampler}


def sampler_nfe(sampler: DictConfig, T: int, w: float) -> int:
    """Network evaluations per image of the (validated) sampler node at guidance weight w."""
    interval = sampler.get("guidance_interval")
    return network_evaluations(sampler_name(sampler), T, w, interval, **index_settings(sampler))


def validate_guidance_interval(interval: Any, T: int) -> None:
    """null, or [t_lo, t_hi]: integers with 0 <= t_lo <= t_hi <= T - 1 (both included)."""
    if interval is None:
        return
    key = "sampler.guidance_interval"
    pair = isinstance(interval, (list, ListConfig)) and len(interval) == 2
    pair = pair and all(is_int(t) for t in interval)
    require(pair, key, interval, "must be null or [t_lo, t_hi], two integer indices")
    within = min(interval) >= 0 and max(interval) <= T - 1
    require(within, key, interval, f"both indices must lie in [0, T-1={T - 1}]")
    require(interval[0] <= interval[1], key, interval, "reversed: t_lo must be <= t_hi")


def validate_sampler(sampler: DictConfig, T: int) -> None:
    """The sampler's settings against a schedule of T steps (the sampler runs only after
    training, or after generate's manifest is written: too late to find them wrong)."""
    name = sampler_name(sampler)
    allowed = f"must be diffusion_lab.diffusion.<name>_sample, name one of {SAMPLER_NAMES}"
    require(name in SAMPLER_NAMES, "sampler._target_", sampler._target_, allowed)
    if "variance" in sampler:
        allowed = f"must be one of {get_args(Variance)}"
        require(
            sampler.variance in get_args(Variance), "sampler.variance", sampler.variance, allowed
        )
    eta = sampler.get("eta", 0)
    require(is_number(eta) and eta >= 0, "sampler.eta", eta, "must be a number >= 0")
    validate_guidance_interval(sampler.get("guidance_interval"), T)
    steps = sampler.get("steps", T)
    require(is_int(steps) and 1 <= steps <= T, "sampler.steps", steps, f"must be in [1, T={T}]")
    try:
        sampler_timesteps(name, T, **index_settings(sampler))
    except ValueError as err:
        raise ConfigError(f"sampler.{err}") from None


# What Lightning's Trainer accepts as `precision` (lightning_fabric's _PRECISION_INPUT).
TRAINER_PRECISIONS = (
    "32-true", "32", 32, "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64", 64,
    "bf16", "16", 16, None,
)  # fmt: skip
# A device count, -1 (all), auto, or indices as a list or a string such as "0,1".
DEVICE_INDICES = re.compile(r"\d+(,\d+)*,?")


def validate_trainer(cfg: DictConfig) -> None:
    """Precision, devices and accelerator, which Lightning would refuse in several lines."""
    trainer = cfg.trainer
    precision = trainer.get("precision")
    allowed = "must be 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true or 64-true"
    require(precision in TRAINER_PRECISIONS, "trainer.precision", precision, allowed)
    devices = trainer.get("devices")
    ok = devices in ("auto", -1) or (is_int(devices) and devices > 0)
    ok = ok or (isinstance(devices, (list, ListConfig)) and len(devices) > 0)
    ok = ok or (isinstance(devices, str) and DEVICE_INDICES.fullmatch(devices) is not None)
    allowed = "must be a positive integer, -1 (all), auto or a list of device indices"
    require(ok, "trainer.devices", devices, allowed)
    validate_accelerator(cfg)


def validate_callbacks(cfg: DictConfig) -> None:
    """Build every callback once: their constructors check intervals, counts and rates."""
    for name, node in cfg.get("callbacks", {}).items():
        check_by_building(node, f"callbacks.{name}")


PERF_SWITCHES = ("fused_optimizer", "tf32", "data_on_device")
PERF_AUTO_SWITCHES = ("compile", "channels_last")


def validate_perf(cfg: DictConfig) -> None:
    """The fast-path switches under `perf` (those the entry point has)."""
    perf = cfg.get("perf", {})
    for key in PERF_AUTO_SWITCHES:
        value = perf.get(key, False)
        allowed = "must be true, false or auto (on for CUDA devices only)"
        require(value in (True, False, "auto"), f"perf.{key}", value, allowed)
    mode = perf.get("compile_mode", "default")
    require(mode in COMPILE_MODES, "perf.compile_mode", mode, f"must be one of {COMPILE_MODES}")
    for key in PERF_SWITCHES:
        value = perf.get(key, False)
        require(isinstance(value, bool), f"perf.{key}", value, "must be true or false")


def require_gpu_if_asked(key: str, device: str, instead: str) -> None:
    """A GPU asked for (gpu, cuda, cuda:N) on a machine without one: one line, before any work."""
    asked = str(device) in ("gpu", "cuda") or str(device).startswith("cuda:")
    require(
        not asked or torch.cuda.is_available(), key, device, f"no CUDA GPU is visible; {instead}"
    )


def validate_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one fails here instead of deep inside Lightning."""
    require_gpu_if_asked("trainer.accelerator", cfg.trainer.get("accelerator"), "use trainer=cpu")


# Errors a constructor raises for a value it refuses (Lightning's own checks included).
REFUSALS = (ValueError, TypeError, MisconfigurationException)
# Our constructors' messages start with `name=value: `; they are prefixed with the node's key.
OWN_MESSAGE = re.compile(r"^\w+=")


def check_by_building(node: DictConfig, key: str) -> None:
    """Build `node` once to run its constructor's own checks, before any work starts.

    The constructors raise `ValueError("name=value: what is allowed")`; that becomes one line
    naming the full key, e.g. `callbacks.ema.decay=1.0: must lie in (0, 1)`. A library's own
    refusal becomes `key: <its first line>`.
    """
    try:
        instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, REFUSALS):
            raise
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if OWN_MESSAGE.match(message):
            raise ConfigError(f"{key}.{message}") from None
        raise ConfigError(f"{key}: {message}") from None


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


CLASSIFY_MODES = ("auto", "real", "augmented", "synthetic")


def require_optional_count(cfg: DictConfig, key: str) -> None:
    """A key that is null (use everything) or a positive integer."""
    value = OmegaConf.select(cfg, key)
    require(value is None or (is_int(value) and value > 0), key, value, "must be null or > 0")


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


def require_distinct_list(key: str, values: Any, what: str) -> None:
    """A non-empty list without repeats."""
    ok = isinstance(values, (list, ListConfig)) and len(values) > 0
    require(ok, key, values, f"must be a non-empty list of {what}")
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    require(not repeated, key, values, f"lists {repeated[0]!r} twice" if repeated else "")


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


def infer_num_classes(data: DictConfig) -> None:
    """`data.num_classes=null` with `data=image_folder` becomes the number of class folders
    under `data.root` (as torchvision's ImageFolder counts them), before anything that the
    count sizes is built; any other data config is left as it is."""
    if data.get("num_classes") is not None or "_target_" not in data:
        return
    if not issubclass(get_class(data._target_), ImageFolderDataModule):
        return
    if data.root is None:
        raise DataError(NO_ROOT)
    data.num_classes = len(classes_of(Path(data.root).expanduser()))
