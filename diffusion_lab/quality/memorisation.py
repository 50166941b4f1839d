"""A memorisation check: each generated vector's nearest training vector in feature space.

A generated image counts as a copy when its nearest training image is much nearer than the
second nearest: d_1 / d_2 < 1/3, the criterion of Yoon et al. 2023 and Gu et al. 2023 for
diffusion models (after Carlini et al. 2023). The ratio needs no scale of its own, so it works
in any feature space; an exact duplicate has d_1 = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffusion_lab.quality.neighbours import k_nearest

COPY_RATIO = 1 / 3


@dataclass(frozen=True)
class NearestTraining:
    """Per generated vector: its nearest training index, d_1, d_2 and d_1 / d_2."""

    index: Tensor
    distance: Tensor
    second_distance: Tensor

    @property
    def ratio(self) -> Tensor:
        """d_1 / d_2; 0 for an exact copy (and 0 when two training vectors coincide at d_1=0)."""
        return self.distance / self.second_distance.clamp(min=torch.finfo(torch.float64).tiny)

    def copies(self, threshold: float = COPY_RATIO) -> Tensor:
        """Bool per generated vector: d_1 / d_2 below `threshold`."""
        return self.ratio < threshold

    def share_copied(self, threshold: float = COPY_RATIO) -> float:
        """The share of generated vectors that count as copies."""
        return float(self.copies(threshold).double().mean())

    def closest(self, count: int) -> Tensor:
        """Indices of the `count` generated vectors with the smallest ratio, smallest first."""
        return self.ratio.argsort()[:count]


def nearest_training(generated: Tensor, training: Tensor) -> NearestTraining:
    """The two nearest training vectors of every generated vector (training needs >= 2)."""
    if len(training) < 2:
        raise ValueError(
            f"the memorisation check needs at least 2 training vectors, got {len(training)}"
        )
    distances, indices = k_nearest(generated, training, 2)
    return NearestTraining(indices[:, 0], distances[:, 0], distances[:, 1])
