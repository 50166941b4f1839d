"""Fast paths for running a network: torch.compile and TF32, with safe fallbacks.

Each is a switch (`perf.*` in the configs). A switch the machine cannot honour falls back to
the plain path with one warning that names it, instead of failing mid-run.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import torch

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def c_compiler() -> str | None:
    """The C compiler torch.compile's code generation would call, or None."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    return None


def resolve_switch(setting: bool | str, device: torch.device) -> bool:
    """A true/false/"auto" switch: "auto" means on for CUDA devices only."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def should_compile(setting: bool | str, device: torch.device, key: str = "perf.compile") -> bool:
    """Resolve the compile switch; without a C compiler, warn once and run uncompiled."""
    if not resolve_switch(setting, device):
        return False
    if c_compiler() is None:
        warnings.warn(
            f"{key}={setting}: no C compiler (cc, gcc or clang) on PATH, which torch.compile "
            "needs; running uncompiled",
            stacklevel=2,
        )
        return False
    return True


def compiled(fn: Callable[..., Any], mode: str = "default") -> Callable[..., Any]:
    """torch.compile `fn` in `mode` (one of COMPILE_MODES)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    return torch.compile(fn, mode=None if mode == "default" else mode)


def use_tf32(enabled: bool) -> None:
    """TF32 tensor cores for float32 matmuls and convolutions on NVIDIA GPUs (no-op elsewhere)."""
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def bf16_usable(device: torch.device) -> bool:
    """Whether bf16 autocast is supported on `device` (every CPU; Ampere or newer NVIDIA GPUs)."""
    return device.type != "cuda" or torch.cuda.is_bf16_supported()
