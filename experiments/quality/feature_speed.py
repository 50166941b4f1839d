"""Features/s of the Inception feature extractor on this machine, and how far bf16 and
channels_last move the features from fp32.

    python experiments/quality/feature_speed.py --weights PATH --cifar DIR [--n 64]

Times FeatureExtractor on the first `n` CIFAR-10 test images for every combination of
threads, batch size, channels_last and bf16, after one untimed warm-up batch; then compares
each variant's features with fp32's (max relative difference, and the FID between the two
feature sets of the same images, which is 0 for identical features).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from diffusion_lab.data.cifar10 import load_cifar10
from diffusion_lab.quality.features import FeatureExtractor, load_feature_network
from diffusion_lab.quality.frechet import frechet_distance, gaussian_stats


def timed(extractor: FeatureExtractor, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Features of `images` and images/s, after one warm-up batch."""
    extractor(images[: extractor.batch_size])
    start = time.perf_counter()
    features = extractor(images)
    return features, len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--cifar", required=True)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    images = load_cifar10(args.cifar, train=False, download=False)[0][: args.n]
    network = load_feature_network(args.weights, 299, 2048)
    reference = None
    for threads, batch, channels_last, bf16 in itertools.product(
        args.threads, args.batch_sizes, (False, True), (False, True)
    ):
        torch.set_num_threads(threads)
        extractor = FeatureExtractor(network, 299, batch, "cpu", channels_last, bf16)
        features, rate = timed(extractor, images)
        if reference is None:
            reference = features
        relative = ((features - reference).norm(dim=1) / reference.norm(dim=1)).max()
        fid = frechet_distance(gaussian_stats(reference), gaussian_stats(features))
        print(
            f"threads {threads} batch {batch:3d} channels_last {channels_last!s:5} "
            f"bf16 {bf16!s:5}: {rate:6.2f} images/s; vs first row: max relative "
            f"{relative:.2e}, FID {fid:.3g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
