"""The sampler node of a config: its name, its network evaluations, and its checks against T."""

from __future__ import annotations

from typing import Any, get_args

from omegaconf import DictConfig, ListConfig

from diffusion_lab.config.checks import is_int, is_number, require
from diffusion_lab.diffusion.nfe import SAMPLER_NAMES, network_evaluations, sampler_timesteps
from diffusion_lab.diffusion.samplers import Variance
from diffusion_lab.utils.errors import ConfigError


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
