"""The real side of `evaluate`: the reference images and their features (cached per data and
weights), and the reference classifier of label fidelity."""

from __future__ import annotations

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from diffusion_lab.config.checks import require
from diffusion_lab.data.classification import first_per_class
from diffusion_lab.runs.reference import ReferenceClassifier, load_reference_classifier
from diffusion_lab.scoring.features import FeatureNetwork, features_of
from diffusion_lab.scoring.reference_cache import CacheKey, cached_features, sha256_tensors

log = logging.getLogger(__name__)


def load_reference_images(cfg: DictConfig) -> tuple[Tensor, Tensor, list[str]]:
    """The reference split of the configured data (train: all of it, the validation images
    included), or the first `reference.per_class` images of each class; and the class names."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    images, labels = datamodule.load_split(train=cfg.reference.split == "train")
    if cfg.reference.per_class is not None:
        per_class = cfg.reference.per_class
        what = f"reference.per_class={per_class}"
        picked = first_per_class(labels, per_class, cfg.data.num_classes, what)
        images, labels = images[picked], labels[picked]
    names = list(datamodule.class_names) or [str(k) for k in range(cfg.data.num_classes)]
    return images, labels, names


def reference_key(cfg: DictConfig, network: FeatureNetwork, images: Tensor, labels: Tensor):
    """The cache key of the reference features: names, plus checksums of data and weights."""
    dataset = cfg.data._target_.rsplit(".", 1)[-1].removesuffix("DataModule")
    per_class = cfg.reference.per_class
    return CacheKey(
        dataset=f"{dataset}{cfg.data.img_size}",
        split=cfg.reference.split,
        subset="all" if per_class is None else f"first{per_class}perclass",
        network=network.path.stem,
        data_sha256=sha256_tensors(images, labels),
        weights_sha256=network.sha256,
    )


def reference_features(
    cfg: DictConfig, network: FeatureNetwork, images: Tensor, labels: Tensor
) -> Tensor:
    """The reference images' features, from the cache when it holds them for this data and
    these weights; computed (and cached) otherwise."""
    key = reference_key(cfg, network, images, labels)
    features, _ = cached_features(
        cfg.cache_dir,
        key,
        lambda: features_of(network, images, f"reference {cfg.reference.split}"),
        log.info,
    )
    return features


def load_reference(cfg: DictConfig) -> ReferenceClassifier | None:
    """The reference classifier of label fidelity (None when off), checked against the data."""
    if cfg.reference_classifier is None:
        log.info(
            "label fidelity: not measured (reference_classifier=null; the CIFAR-10 reference is "
            "experiments/quality/reference_classifier/reference.ckpt)"
        )
        return None
    reference = load_reference_classifier(cfg.reference_classifier, key="reference_classifier")
    shape = torch.empty(0, cfg.data.channels, cfg.img_size, cfg.img_size)
    reference.check_images(
        shape, f"the data (img_size={cfg.img_size}, data.channels={cfg.data.channels})"
    )
    require(
        reference.num_classes == cfg.data.num_classes,
        "reference_classifier",
        cfg.reference_classifier,
        f"has {reference.num_classes} classes; the data has {cfg.data.num_classes}",
    )
    return reference
