"""Sanity anchors of the FID pipeline on real CIFAR-10: no model involved.

    python experiments/quality/anchors.py --weights PATH --cifar DIR --per-class 50

Three disjoint real subsets, each the first/next `per-class` images of every class:
train A (the first), train B (the next), test (the first of the test split). Prints FID, KID,
precision and recall of train A against test and against train B, with the Inception features
of the standard protocol (FeatureExtractor: TF legacy bilinear resize to 299, TF input range).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from diffusion_lab.data.cifar10 import load_cifar10
from diffusion_lab.quality.features import FeatureExtractor, load_feature_network
from diffusion_lab.quality.frechet import frechet_distance, gaussian_stats
from diffusion_lab.quality.kid import kernel_inception_distance
from diffusion_lab.quality.precision_recall import precision_recall


def per_class_slice(labels: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Indices of images start..start+count-1 of every class, in split order."""
    return torch.cat([(labels == c).nonzero().flatten()[start : start + count] for c in range(10)])


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    kid, kid_std = kernel_inception_distance(a, b, subsets=100, subset_size=min(len(a), 1000))
    precision, recall = precision_recall(a, b)
    fid = frechet_distance(gaussian_stats(a), gaussian_stats(b))
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--cifar", required=True)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    n = args.per_class
    train, train_labels = load_cifar10(args.cifar, train=True, download=False)
    test, test_labels = load_cifar10(args.cifar, train=False, download=False)
    subsets = {
        "train A": train[per_class_slice(train_labels, 0, n)],
        "train B": train[per_class_slice(train_labels, n, n)],
        "test": test[per_class_slice(test_labels, 0, n)],
    }
    extractor = FeatureExtractor(
        load_feature_network(args.weights, 299, 2048), 299, args.batch_size
    )
    start = time.perf_counter()
    features = {name: extractor(images) for name, images in subsets.items()}
    seconds = time.perf_counter() - start
    results = {
        "images_per_subset": 10 * n,
        "features_per_s": 30 * n / seconds,
        "train A vs test": compare(features["train A"], features["test"]),
        "train A vs train B": compare(features["train A"], features["train B"]),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
