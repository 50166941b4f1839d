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
    """Mean (D,) and covariance (D, D), both float64, of `count` feature vectors.

    `factor` (count, D), kept when count <= D, is the centred features over sqrt(count - 1):
    cov = factor^T factor has rank < count, and the FID can work in that small span.
    """

    mean: Tensor
    cov: Tensor
    count: int
    factor: Tensor | None = None


def gaussian_stats(features: Tensor) -> GaussianStats:
    """Mean and unbiased covariance of `features` (N, D), N >= 2, accumulated in float64."""
    n, dim = features.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {n}")
    mean = torch.zeros(dim, dtype=torch.float64)
    for chunk in features.split(CHUNK_ROWS):
        mean += chunk.double().sum(0)
    mean /= n
    if n <= dim:
        factor = (features.double() - mean) / (n - 1) ** 0.5
        return GaussianStats(mean, factor.T @ factor, n, factor)
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


def trace_sqrt_product(a: GaussianStats, b: GaussianStats) -> Tensor:
    """tr((S_a S_b)^(1/2)) for the PSD covariances S_a, S_b.

    The trace is the sum of the square roots of the eigenvalues of S_a S_b, and a symmetric PSD
    matrix with the same nonzero eigenvalues is at hand: S_a^(1/2) S_b S_a^(1/2) (D x D), or,
    when S_a = F^T F with F (n, D), n <= D, the smaller F S_b F^T (n x n). Either way no
    complex parts appear, unlike with a general matrix square root of S_a S_b.
    """
    factored = [s for s in (a, b) if s.factor is not None]
    if factored:
        small = min(factored, key=lambda s: s.count)
        other = b if small is a else a
        inner = small.factor @ other.cov @ small.factor.T
    else:
        root_a = sqrt_psd(a.cov)
        inner = root_a @ b.cov @ root_a
    return torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """The squared Fréchet distance between the Gaussians N(a.mean, a.cov), N(b.mean, b.cov)."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {tuple(a.mean.shape)} and {tuple(b.mean.shape)}")
    mean_term = (a.mean - b.mean).square().sum()
    cov_term = a.cov.trace() + b.cov.trace() - 2 * trace_sqrt_product(a, b)
    return float(mean_term + cov_term)
