"""Checkpoint files: atomic writes, and rebuilding a trained DDPM from a checkpoint alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from diffusion_lab.errors import UserFacingError
from diffusion_lab.files import atomic_path
from diffusion_lab.lit.callbacks import RUN_CONFIG_KEY
from diffusion_lab.lit.ddpm import DDPMModule


def load_ddpm(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DDPMModule, dict[str, Any]]:
    """The module with the checkpoint's weights (EMA weights when EMA was on) and its run config."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"ckpt={path}: no such checkpoint file")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    config = checkpoint.get(RUN_CONFIG_KEY)
    if config is None:
        raise UserFacingError(
            f"ckpt={path}: not a diffusion_lab training checkpoint (no stored run config)"
        )
    module = instantiate(config["module"])
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), config


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target under a temporary name, then renames it.

    Lightning's own writer stages the file in the system temp folder and moves it, which is a
    plain copy (not atomic) when that folder is on another filesystem. Local paths only.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
