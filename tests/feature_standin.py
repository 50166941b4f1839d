"""A tiny TorchScript stand-in for the Inception feature network (the real one is 87 MB)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F


class StandInFeatures(torch.nn.Module):
    """(N, 3, S, S) in [-1, 1] -> (N, dim): 4x4 average colours through a fixed projection."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(48, dim, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError("expected 3 channels")
        return F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.projection


def save_stand_in(path: Path, dim: int = 16) -> Path:
    """Write the stand-in as a TorchScript archive at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(StandInFeatures(dim)).save(str(path))
    return path
