"""Checks of what runs a config: the Trainer (precision, devices, accelerator), the callbacks
and the fast-path switches under `perf`."""

from __future__ import annotations

import re

from omegaconf import DictConfig, ListConfig

from diffusion_lab.config.checks import check_by_building, is_int, require, require_gpu_if_asked
from diffusion_lab.nets.speed import COMPILE_MODES

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


def validate_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one fails here instead of deep inside Lightning."""
    require_gpu_if_asked("trainer.accelerator", cfg.trainer.get("accelerator"), "use trainer=cpu")


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
