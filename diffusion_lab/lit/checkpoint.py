"""Checkpoint files: atomic writes, and rebuilding a trained DDPM from a checkpoint alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
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
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch.load raises many types (unpickling, zip, EOF) for a foreign file
        raise UserFacingError(f"ckpt={path}: not a PyTorch checkpoint file") from None
    config = checkpoint.get(RUN_CONFIG_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or "module" not in config:
        raise UserFacingError(
            f"ckpt={path}: not a diffusion_lab training checkpoint (no stored run config)"
        )
    try:
        module = instantiate(config["module"])
        module.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # a config from another version of the code, or edited weights
        raise UserFacingError(
            f"ckpt={path}: its weights do not fit the model its stored config builds "
            f"({type(err).__name__}); a checkpoint from an incompatible config or version"
        ) from None
    if not isinstance(module, DDPMModule):
        raise UserFacingError(f"ckpt={path}: holds a {type(module).__name__}, not a DDPM")
    return module.eval(), config


def class_names_of(config: dict[str, Any]) -> tuple[str, ...]:
    """The class names of the data a run trained on: those `train` recorded (an image folder's
    come from its folders), else the datamodule class's own (checkpoints made before that)."""
    names = config.get("class_names")
    if names is None:
        names = getattr(get_class(config["data"]["_target_"]), "class_names", ())
    return tuple(names)


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
