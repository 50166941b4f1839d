"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with a cubic kernel.

k(x, y) = (x . y / D + 1)^3. The estimate is averaged over random subsets of equal size;
its mean is unbiased (about 0 for two draws of one distribution) and its std over the subsets
says how much a single subset would vary.
"""

from __future__ import annotations

import torch
from torch import Tensor


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """(x y^T / D + 1)^3 in float64, (len(x), len(y))."""
    return (x.double() @ y.double().T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """The unbiased estimate of MMD^2 between two equal-size samples (m, D)."""
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    # The diagonals pair a sample with itself; leaving them out makes the estimate unbiased.
    within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kernel_inception_distance(
    x: Tensor, y: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Mean and std of the unbiased MMD^2 over `subsets` random subsets of both sets.

    The subset size is min(subset_size, len(x), len(y)) and must be at least 2.
    """
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 feature vectors in each set, got {size}")
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(
        [
            mmd2_unbiased(
                x[torch.randperm(len(x), generator=generator)[:size]],
                y[torch.randperm(len(y), generator=generator)[:size]],
            )
            for _ in range(subsets)
        ],
        dtype=torch.float64,
    )
    std = float(values.std()) if subsets > 1 else 0.0
    return float(values.mean()), std
