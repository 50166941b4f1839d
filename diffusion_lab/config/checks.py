"""The primitives of the config checks: one line `key=value: what is allowed`, before any work."""

from __future__ import annotations

import re
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from diffusion_lab.utils.errors import ConfigError


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(`key=value: allowed`) unless ok."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_seed(seed: Any) -> None:
    require(is_int(seed) and seed >= 0, "seed", seed, "must be an integer >= 0")


def require_optional_count(cfg: DictConfig, key: str) -> None:
    """A key that is null (use everything) or a positive integer."""
    value = OmegaConf.select(cfg, key)
    require(value is None or (is_int(value) and value > 0), key, value, "must be null or > 0")


def require_distinct_list(key: str, values: Any, what: str) -> None:
    """A non-empty list without repeats."""
    ok = isinstance(values, (list, ListConfig)) and len(values) > 0
    require(ok, key, values, f"must be a non-empty list of {what}")
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    require(not repeated, key, values, f"lists {repeated[0]!r} twice" if repeated else "")


def require_gpu_if_asked(key: str, device: str, instead: str) -> None:
    """A GPU asked for (gpu, cuda, cuda:N) on a machine without one: one line, before any work."""
    asked = str(device) in ("gpu", "cuda") or str(device).startswith("cuda:")
    require(
        not asked or torch.cuda.is_available(), key, device, f"no CUDA GPU is visible; {instead}"
    )


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
