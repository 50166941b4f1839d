"""Gaussian statistics of feature sets and the Fréchet distance between them (FID), in float64.

FID (Heusel et al. 2017) is the Fréchet distance between two Gaussians fitted to the features:
    d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Rows per chunk when accumulating the covariance: bounds the float64 copy of the features.
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class GaussianStats:
    """Mean (D,) and covariance (D, D), both float64, of `count` feature vectors."""

    mean: Tensor
    cov: Tensor
    count: int


def gaussian_stats(features: Tensor) -> GaussianStats:
    """Mean and unbiased covariance of `features` (N, D), N >= 2, accumulated in float64."""
    n, dim = features.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {n}")
    mean = torch.zeros(dim, dtype=torch.float64)
    for chunk in features.split(CHUNK_ROWS):
        mean += chunk.double().sum(0)
    mean /= n
    # Centred before the products: the raw second moment loses digits to cancellation.
    cov = torch.zeros(dim, dim, dtype=torch.float64)
    for chunk in features.split(CHUNK_ROWS):
        centred = chunk.double() - mean
        cov += centred.T @ centred
    return GaussianStats(mean, cov / (n - 1), n)


def sqrt_psd(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    eigenvalues, vectors = torch.linalg.eigh(matrix)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def trace_sqrt_product(cov_1: Tensor, cov_2: Tensor) -> Tensor:
    """tr((S_1 S_2)^(1/2)) for PSD S_1, S_2.

    S_1 S_2 is similar to S_1^(1/2) S_2 S_1^(1/2), which is symmetric PSD, so its square root
    has the same eigenvalues: the sum of the square roots of that matrix's eigenvalues. No
    complex parts appear, unlike with a general matrix square root of S_1 S_2.
    """
    root_1 = sqrt_psd(cov_1)
    inner = root_1 @ cov_2 @ root_1
    return torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """The squared Fréchet distance between the Gaussians N(a.mean, a.cov), N(b.mean, b.cov)."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {tuple(a.mean.shape)} and {tuple(b.mean.shape)}")
    mean_term = (a.mean - b.mean).square().sum()
    cov_term = a.cov.trace() + b.cov.trace() - 2 * trace_sqrt_product(a.cov, b.cov)
    return float(mean_term + cov_term)
