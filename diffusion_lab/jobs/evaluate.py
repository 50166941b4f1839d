"""What `python -m diffusion_lab.evaluate` does, callable in-process (the study runs it): check
the config, build the features of the reference and the generated images, measure, then write
metrics.json, memorisation.png and the loggers' scalars and HParams. The parts below it:
`diffusion_lab.scoring`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.config.checks import (
    is_int,
    is_number,
    require,
    require_gpu_if_asked,
    require_optional_count,
)
from diffusion_lab.config.data import infer_num_classes
from diffusion_lab.figures.grids import nearest_pairs_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.scoring.features import features_of, load_features, resolve_device
from diffusion_lab.scoring.generated import generated_images
from diffusion_lab.scoring.memory import check_evaluate_memory
from diffusion_lab.scoring.metrics import Features, fidelity_metrics, quality_metrics
from diffusion_lab.scoring.reference import (
    load_reference,
    load_reference_images,
    reference_features,
)
from diffusion_lab.tracking import tags
from diffusion_lab.tracking.hparams import hparams_table, write_hparams
from diffusion_lab.tracking.loggers import check_logger_packages, close_loggers, log_figure
from diffusion_lab.utils.errors import ConfigError
from diffusion_lab.utils.files import check_folder_can_be_made, write_json

log = logging.getLogger(__name__)
KEY_PARAMS = ("w", "per_class", "seed")
PAPER_SAMPLES = 50_000
GREY_REFUSED = (
    "data.channels=1: grey images (such as the 8x8 digits) are not what the Inception features "
    "were trained on; FID, KID and precision/recall of them are not comparable with published "
    "numbers or with colour data, and at 8x8 they measure the upsampling as much as the digits. "
    "Judge such a model by its validation loss and sample grids, or pass features.allow_grey=true "
    "to compute the numbers anyway, for comparisons between models on the same grey data only"
)


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Checks that need neither checkpoint nor data, cheapest first."""
    require(
        (cfg.ckpt is None) != (cfg.set is None),
        "ckpt",
        cfg.ckpt,
        "pass exactly one of ckpt=PATH (sample from it) and set=PATH (a set written by generate)",
    )
    for key in ("batch_size", "features.input_size", "features.dim"):
        value = OmegaConf.select(cfg, key)
        require(is_int(value) and value > 0, key, value, "must be a positive integer")
    require_optional_count(cfg, "features.batch_size")
    for key in ("kid.subsets", "precision_recall.k", "memorisation.pairs"):
        value = OmegaConf.select(cfg, key)
        require(is_int(value) and value >= 1, key, value, "must be an integer >= 1")
    require(
        is_int(cfg.kid.subset_size) and cfg.kid.subset_size >= 2,
        "kid.subset_size",
        cfg.kid.subset_size,
        "must be an integer >= 2 (the unbiased estimate leaves out the diagonal)",
    )
    threads = cfg.features.threads
    require(
        threads is None or (is_int(threads) and threads > 0),
        "features.threads",
        threads,
        "must be null or a positive integer",
    )
    require(is_int(cfg.seed) and cfg.seed >= 0, "seed", cfg.seed, "must be an integer >= 0")
    require(is_number(cfg.w) and cfg.w >= 0, "w", cfg.w, "must be a number >= 0")
    threshold = cfg.memorisation.threshold
    require(
        is_number(threshold) and 0 < threshold <= 1,
        "memorisation.threshold",
        threshold,
        "must be in (0, 1]",
    )
    split = cfg.reference.split
    require(split in ("train", "test"), "reference.split", split, "must be train or test")
    ref = cfg.reference.per_class
    require(
        ref is None or (is_int(ref) and ref >= 2),
        "reference.per_class",
        ref,
        "must be null (all images) or an integer >= 2 (a class's FID needs 2 images)",
    )
    require(
        cfg.device in ("auto", "cpu", "cuda"), "device", cfg.device, "must be auto, cpu or cuda"
    )
    require_gpu_if_asked("device", cfg.device, "use device=cpu or auto")
    validate_image_shape(cfg.data.channels, cfg.img_size, cfg.features)
    check_folder_can_be_made("cache_dir", cfg.cache_dir)


def validate_image_shape(channels: int, img_size: int, features: DictConfig) -> None:
    """Images the feature network can take: RGB (grey only when allowed), at most its size."""
    if channels == 1 and not features.allow_grey:
        raise ConfigError(GREY_REFUSED)
    require(
        channels in (1, 3),
        "data.channels",
        channels,
        "the feature network takes 3 channels (RGB) or, with features.allow_grey, 1",
    )
    require(
        img_size <= features.input_size,
        "img_size",
        img_size,
        f"must be at most features.input_size={features.input_size}: the reference resize "
        "has no antialiasing, so it is defined for upsampling only",
    )


def describe(protocol: dict[str, Any]) -> str:
    """The protocol in one paragraph, for the log."""
    p = protocol
    text = (
        f"protocol: {p['num_generated']} generated images ({p['per_class']} per class) from "
        f"{p['source']}, sampler {p['sampler']} with {p['steps']} steps ({p['nfe']} network "
        f"evaluations per image), w={p['w']}; reference: "
        f"{p['reference']} ({p['num_reference']} images); features: {p['features']}"
    )
    if p["num_generated"] < PAPER_SAMPLES:
        text += (
            f"; FID is biased upward below {PAPER_SAMPLES:,} samples: compare only numbers "
            "with the same sample count"
        )
    return text


def summary_line(metrics: dict[str, Any], protocol: dict[str, Any]) -> str:
    """One line with the headline numbers and what they were measured on."""
    line = (
        f"FID {metrics['quality/fid']:.2f}, KID {metrics['quality/kid']:.4f} "
        f"± {metrics['quality/kid_std']:.4f}, precision {metrics['quality/precision']:.3f}, "
        f"recall {metrics['quality/recall']:.3f}"
    )
    if "quality/memorised_share" in metrics:
        line += f", memorised {metrics['quality/memorised_share']:.2%}"
    if "quality/label_fidelity" in metrics:
        line += f", label fidelity {metrics['quality/label_fidelity']:.2%}"
        if "quality/label_fidelity_ceiling" in metrics:
            line += f" (real test images: {metrics['quality/label_fidelity_ceiling']:.2%})"
    return (
        f"{line} ({protocol['num_generated']} samples, {protocol['sampler']} "
        f"{protocol['steps']} steps, w={protocol['w']}; vs {protocol['reference']})"
    )


def record(
    cfg: DictConfig, metrics: dict[str, Any], protocol: dict[str, Any], figure: Any | None
) -> None:
    """metrics.json, memorisation.png, and the loggers' scalars, figure and HParams."""
    out = Path(cfg.output_dir)
    write_json({**metrics, "protocol": protocol}, out / "metrics.json")
    loggers = [instantiate(node) for node in cfg.logger.values()]
    if figure is not None:
        save_figure(figure, out / "memorisation.png")
        log_figure(loggers, tags.MEMORISATION_FIGURE, figure, step=0)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_metrics(metrics, step=0)
        write_hparams(logger, hparams_table(run_config, KEY_PARAMS))
        logger.finalize("success")
    close_loggers(loggers)


def validate_evaluate_run(cfg: DictConfig) -> None:
    """What `evaluate` checks before any work: the classes of the data, the config, loggers."""
    infer_num_classes(cfg.data)
    validate_evaluate_config(cfg)
    check_logger_packages(cfg.logger)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Validate, build features of the reference and the generated images, measure, record."""
    validate_evaluate_run(cfg)
    device = resolve_device(cfg.device)
    make_generated, protocol = generated_images(cfg, device)
    network = load_features(cfg, device)
    reference = load_reference(cfg)
    real_images, real_labels, names = load_reference_images(cfg)
    check_evaluate_memory(cfg, protocol["per_class"], len(real_labels))
    real = Features(reference_features(cfg, network, real_images, real_labels), real_labels)
    images, labels = make_generated()
    generated = Features(features_of(network, images, "generated"), labels)
    metrics, nearest = quality_metrics(cfg, real, generated, names)
    if reference is not None:
        metrics.update(fidelity_metrics(reference, images, labels, names, device))
    protocol.update(
        num_generated=len(labels),
        num_reference=len(real_labels),
        reference=f"{cfg.data._target_.rsplit('.', 1)[-1]} {cfg.reference.split} split"
        + (
            ""
            if cfg.reference.per_class is None
            else f", first {cfg.reference.per_class} per class"
        ),
        features=f"{network.path.name} (sha256 {network.sha256[:12]}), "
        f"{cfg.features.input_size}x{cfg.features.input_size}, {cfg.features.dim}-d",
    )
    log.info(describe(protocol))
    figure = None
    if nearest is not None:
        closest = nearest.closest(min(cfg.memorisation.pairs, len(labels)))
        ratios = nearest.ratio[closest].tolist()
        figure = nearest_pairs_figure(images[closest], real_images[nearest.index[closest]], ratios)
    record(cfg, metrics, protocol, figure)
    log.info(summary_line(metrics, protocol))
    return metrics
