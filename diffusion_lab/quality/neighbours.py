"""Nearest neighbours of feature vectors in chunks, so no full N x N matrix is ever held.

Distances of a chunk are found with a float32 matrix product (fast, but it loses digits to
cancellation for near-identical vectors); the few neighbours kept are then measured again
exactly in float64 from their differences.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of one chunk's distance matrix (64 MiB in float32).
CHUNK_ELEMENTS = 1 << 24


def chunk_rows(reference_size: int) -> int:
    """Query rows per chunk so that a chunk's distance matrix stays under CHUNK_ELEMENTS."""
    return max(1, CHUNK_ELEMENTS // max(reference_size, 1))


def exact_distances(queries: Tensor, reference: Tensor, indices: Tensor) -> Tensor:
    """||queries[i] - reference[indices[i, j]]|| in float64, shaped like `indices`."""
    picked = reference[indices].double()  # (n, k, D)
    return (queries.double().unsqueeze(1) - picked).norm(dim=-1)


def k_nearest(queries: Tensor, reference: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Distances (float64) and indices of the k nearest reference vectors of every query,
    nearest first: (len(queries), k) each."""
    if k > len(reference):
        raise ValueError(f"asked for {k} neighbours among {len(reference)} vectors")
    distances, indices = [], []
    for chunk in queries.split(chunk_rows(len(reference))):
        approx = torch.cdist(chunk.float(), reference.float())
        candidates = approx.topk(k, dim=1, largest=False).indices
        exact = exact_distances(chunk, reference, candidates)
        order = exact.argsort(dim=1)
        distances.append(exact.gather(1, order))
        indices.append(candidates.gather(1, order))
    return torch.cat(distances), torch.cat(indices)


def kth_neighbour_radius(features: Tensor, k: int) -> Tensor:
    """Each vector's distance to its k-th nearest other vector of the same set (float64)."""
    # The nearest "neighbour" of a vector is itself, at distance 0: ask for k + 1.
    distances, _ = k_nearest(features, features, k + 1)
    return distances[:, k]


def within_any_ball(queries: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """Bool (len(queries),): whether each query lies within radii[j] of some centres[j]."""
    inside = []
    for chunk in queries.split(chunk_rows(len(centres))):
        # Float32 is enough here: a query on a ball's centre is at ~1e-3 against radii ~10.
        distances = torch.cdist(chunk.float(), centres.float())
        inside.append((distances <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside)
