"""The generated side of `evaluate`: images sampled from a checkpoint or read from a set, with
the protocol of how they were made; every check on them runs before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from diffusion_lab.config.checks import is_int, require
from diffusion_lab.config.sampler import sampler_name, sampler_nfe, validate_sampler
from diffusion_lab.data.classification import first_per_class
from diffusion_lab.data.generated import check_matches, read_generated_set
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.utils.errors import ConfigError
from diffusion_lab.utils.progress import progress_bar


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
    with progress_bar(len(labels), "sampling") as bar:
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
