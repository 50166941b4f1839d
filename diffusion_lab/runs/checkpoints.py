"""The checkpoint format of a run: the run config that every checkpoint stores, so that a
checkpoint alone rebuilds its model, and reading a checkpoint back with its weights.

Writing checkpoints (atomically, `last.ckpt`, the random state): `diffusion_lab.lit.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from diffusion_lab.lit.guard import all_finite
from diffusion_lab.utils.errors import UserFacingError

RUN_CONFIG_KEY = "diffusion_lab_run_config"


class StoreRunConfig(pl.Callback):
    """Writes the run config into every checkpoint, so a checkpoint alone rebuilds its model."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config


def read_checkpoint(path: str | Path, key: str, map_location: Any = "cpu") -> dict[str, Any]:
    """A diffusion_lab training checkpoint, read; `key` (ckpt, ckpt_path) names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"{key}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch.load raises many types (unpickling, zip, EOF) for a foreign file
        raise UserFacingError(f"{key}={path}: not a PyTorch checkpoint file") from None
    config = checkpoint.get(RUN_CONFIG_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or "module" not in config or "state_dict" not in checkpoint:
        raise UserFacingError(
            f"{key}={path}: not a diffusion_lab training checkpoint (no stored run config)"
        )
    return checkpoint


def load_weights(
    module: pl.LightningModule, checkpoint: dict[str, Any], key: str, path: Any, builder: str
) -> None:
    """The checkpoint's weights into `module` (built by `builder`): one line where they do not
    fit or hold NaN."""
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # a config from another version of the code, or edited weights
        raise UserFacingError(
            f"{key}={path}: its weights do not fit the model {builder} builds "
            f"({type(err).__name__}); a checkpoint from an incompatible config or version"
        ) from None
    if not all_finite(list(module.state_dict().values())):
        raise UserFacingError(
            f"{key}={path}: its weights hold NaN or Inf values (a diverged run); "
            "use a checkpoint written before the divergence"
        )


def check_resumable(path: str | Path, module: pl.LightningModule) -> None:
    """A checkpoint `train` can resume from: readable, ours, and fitting this config's `module`."""
    load_weights(module, read_checkpoint(path, "ckpt_path"), "ckpt_path", path, "this config")
