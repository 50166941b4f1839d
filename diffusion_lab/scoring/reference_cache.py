"""Real-data features cached once per dataset, split, subset and feature network.

A cache file is named by what it describes (`<dataset>-<split>-<subset>-<network>.pt`) and
records the sha256 of the images and labels it was computed from and of the network's weights.
A file whose checksums differ from the current data or weights is never reused: it is
recomputed and replaced, and the caller is told why.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffusion_lab.utils.files import atomic_path

FORMAT = "diffusion_lab reference features"
FORMAT_VERSION = 1
UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def sha256_tensors(*tensors: Tensor) -> str:
    """sha256 over the bytes, shapes and dtypes of the tensors, in order."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype};".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What a cached feature set belongs to; the name parts say it, the checksums prove it."""

    dataset: str
    split: str
    subset: str
    network: str
    data_sha256: str
    weights_sha256: str

    def file_name(self) -> str:
        name = f"{self.dataset}-{self.split}-{self.subset}-{self.network}"
        return UNSAFE.sub("_", name) + ".pt"

    def record(self) -> dict[str, str]:
        return {"data_sha256": self.data_sha256, "weights_sha256": self.weights_sha256}


def stale_reason(found: dict, key: CacheKey) -> str | None:
    """Why a cached file cannot be reused for `key` (None when it can)."""
    if found.get("format") != FORMAT or found.get("format_version") != FORMAT_VERSION:
        return "it is not a reference-features file of this version"
    if found.get("data_sha256") != key.data_sha256:
        return "it was computed from other data (the images or labels differ)"
    if found.get("weights_sha256") != key.weights_sha256:
        return "it was computed with another feature network (the weights differ)"
    return None


def cached_features(
    folder: str | Path,
    key: CacheKey,
    compute: Callable[[], Tensor],
    note: Callable[[str], None],
) -> tuple[Tensor, bool]:
    """The features for `key`: from the cache when its checksums match, else `compute()`d and
    written (atomically). `note` is told what happened. Returns (features, reused)."""
    path = Path(folder).expanduser() / key.file_name()
    if path.is_file():
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: recompute rather than fail
            found = {}
        reason = stale_reason(found, key) if isinstance(found, dict) else "unreadable"
        if reason is None:
            note(f"reference features reused from {path}")
            return found["features"], True
        note(f"reference features in {path} not reused: {reason}; recomputing")
    features = compute()
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **key.record()}
    with atomic_path(path) as tmp:
        torch.save({**record, "features": features}, tmp)
    note(f"reference features cached in {path}")
    return features, False
