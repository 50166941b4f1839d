"""Every quality metric of generated features against the real ones, and label fidelity; the
math itself is in `diffusion_lab.quality`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusion_lab.quality.fidelity import label_fidelity
from diffusion_lab.quality.frechet import frechet_distance, gaussian_stats
from diffusion_lab.quality.kid import kernel_inception_distance
from diffusion_lab.quality.memorisation import NearestTraining, nearest_training
from diffusion_lab.quality.precision_recall import precision_recall
from diffusion_lab.runs.reference import ReferenceClassifier


@dataclass(frozen=True)
class Features:
    """Feature vectors (N, D) with their class labels (N,)."""

    vectors: Tensor
    labels: Tensor


def fid(real: Tensor, generated: Tensor) -> float:
    """FID between two feature sets."""
    return frechet_distance(gaussian_stats(real), gaussian_stats(generated))


def per_class_fid(real: Features, generated: Features, names: Sequence[str]) -> dict[str, float]:
    """`quality/fid_class/<name>`: each class's generated features against its real ones."""
    return {
        f"quality/fid_class/{name}": fid(
            real.vectors[real.labels == k], generated.vectors[generated.labels == k]
        )
        for k, name in enumerate(names)
    }


def equal_size_subset(features: Tensor, size: int, seed: int) -> Tensor:
    """A random subset of `size` rows (all rows when there are no more)."""
    if len(features) <= size:
        return features
    generator = torch.Generator().manual_seed(seed)
    return features[torch.randperm(len(features), generator=generator)[:size]]


def quality_metrics(
    cfg: DictConfig, real: Features, generated: Features, names: Sequence[str]
) -> tuple[dict[str, Any], NearestTraining | None]:
    """Every `quality/` metric, and the nearest training vectors (train reference only)."""
    kid, kid_std = kernel_inception_distance(
        real.vectors, generated.vectors, cfg.kid.subsets, cfg.kid.subset_size, cfg.seed
    )
    pr_real = equal_size_subset(real.vectors, len(generated.vectors), cfg.seed)
    precision, recall = precision_recall(pr_real, generated.vectors, cfg.precision_recall.k)
    metrics: dict[str, Any] = {
        "quality/fid": fid(real.vectors, generated.vectors),
        "quality/kid": kid,
        "quality/kid_std": kid_std,
        "quality/precision": precision,
        "quality/recall": recall,
        **per_class_fid(real, generated, names),
    }
    nearest = None
    if cfg.reference.split == "train":
        nearest = nearest_training(generated.vectors, real.vectors)
        metrics["quality/memorised_share"] = nearest.share_copied(cfg.memorisation.threshold)
    return metrics, nearest


def fidelity_metrics(
    reference: ReferenceClassifier,
    images: Tensor,
    labels: Tensor,
    names: Sequence[str],
    device: torch.device,
) -> dict[str, float]:
    """`quality/label_fidelity` overall and per class, and the classifier's real test accuracy
    (`quality/label_fidelity_ceiling`) where its run recorded one."""
    overall, per_class = label_fidelity(
        reference.net.to(device),
        images,
        labels,
        reference.num_classes,
        autocast_dtype=reference.autocast_dtype,
    )
    metrics = {"quality/label_fidelity": overall}
    if reference.test_accuracy is not None:
        metrics["quality/label_fidelity_ceiling"] = reference.test_accuracy
    for name, value in zip(names, per_class.tolist(), strict=True):
        metrics[f"quality/label_fidelity_class/{name}"] = value
    return metrics
