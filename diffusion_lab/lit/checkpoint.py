"""Checkpoint files written atomically (reading them back: `diffusion_lab.lit.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from diffusion_lab.files import atomic_path


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
        # Through a file object: torch.save names the zip records after a path it is given, and
        # the temporary name differs per process, so equal checkpoints get equal bytes.
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            torch.save(checkpoint, f)
