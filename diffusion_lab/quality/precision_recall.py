"""Improved precision and recall (Kynkäänniemi et al. 2019) in a feature space.

Each set's manifold is the union of balls around its vectors, each with the radius of the
distance to its k-th nearest neighbour in the same set (k = 3 in the paper). Precision is the
share of generated vectors inside the real manifold (are the samples realistic?); recall is the
share of real vectors inside the generated manifold (is the real variety covered?).
"""

from __future__ import annotations

from torch import Tensor

from diffusion_lab.quality.neighbours import kth_neighbour_radius, within_any_ball

K_PAPER = 3


def manifold_coverage(queries: Tensor, manifold: Tensor, k: int) -> float:
    """The share of `queries` inside the k-NN manifold of `manifold`."""
    radii = kth_neighbour_radius(manifold, k)
    return float(within_any_ball(queries, manifold, radii).double().mean())


def precision_recall(real: Tensor, generated: Tensor, k: int = K_PAPER) -> tuple[float, float]:
    """(precision, recall) of `generated` against `real`; each set needs more than k vectors."""
    for name, features in (("real", real), ("generated", generated)):
        if len(features) <= k:
            raise ValueError(f"precision/recall with k={k} needs more than {k} {name} vectors")
    return manifold_coverage(generated, real, k), manifold_coverage(real, generated, k)
