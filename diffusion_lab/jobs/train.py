"""What `python -m diffusion_lab.train` does, callable in-process (the study runs it): validate,
fit, then write metrics.json and the HParams entry; and the metric a sweeper optimises."""

from __future__ import annotations

import warnings

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from diffusion_lab.cli.entry_points import print_summary
from diffusion_lab.config.checks import require
from diffusion_lab.config.data import infer_num_classes
from diffusion_lab.config.train import validate_train_config
from diffusion_lab.jobs import fitting
from diffusion_lab.lit.callbacks import Throughput
from diffusion_lab.nets.speed import bf16_usable, resolve_switch, use_tf32
from diffusion_lab.runs.checkpoints import check_resumable
from diffusion_lab.tracking import tags
from diffusion_lab.utils.errors import ConfigError

# The study's key settings: in every run's HParams entry, whether set or not.
KEY_PARAMS = (
    "T",
    "beta_1",
    "beta_T",
    "img_size",
    "batch_size",
    "lr",
    "epochs",
    "w",
    "p_uncond",
    "seed",
)


def final_metrics(trainer: pl.Trainer, wall_time_s: float) -> dict[str, float]:
    """The last epoch's logged scalars plus run size and wall time."""
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("train/", "val/", "quality/"))
    }
    metrics.update(
        {
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "wall_time_s": wall_time_s,
        }
    )
    for callback in trainer.callbacks:
        if isinstance(callback, Throughput) and callback.images_per_s is not None:
            metrics["train_images_per_s"] = callback.images_per_s
    return metrics


def training_device(cfg: DictConfig) -> torch.device:
    """The kind of device the trainer will pick: CUDA where asked for or automatic and present."""
    on_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")


def usable_precision(precision: str, device: torch.device) -> str:
    """The trainer precision, or 32-true with a warning where the GPU has no bf16."""
    if "bf16" in str(precision) and not bf16_usable(device):
        warnings.warn(
            f"trainer.precision={precision}: this GPU has no bf16; training in 32-true",
            stacklevel=2,
        )
        return "32-true"
    return precision


def validate_train_run(cfg: DictConfig) -> None:
    """What `python -m diffusion_lab.train` checks before any work: objective, then config."""
    validate_objective(cfg)
    infer_num_classes(cfg.data)
    validate_train_config(cfg)


def train(cfg: DictConfig) -> dict[str, float]:
    """Validate, build from the config, fit, then write metrics.json and the HParams entry."""
    infer_num_classes(cfg.data)
    validate_train_config(cfg)
    cfg.trainer.precision = usable_precision(cfg.trainer.precision, training_device(cfg))
    # Resolved before the module is built (and recorded so in the run config).
    cfg.perf.channels_last = resolve_switch(cfg.perf.channels_last, training_device(cfg))
    use_tf32(cfg.perf.tf32)
    if cfg.ckpt_path is not None:
        # A text file or another model's checkpoint fails here, not inside trainer.fit.
        check_resumable(cfg.ckpt_path, instantiate(cfg.module))
    fitted = fitting.fit(cfg, cfg.data, cfg.ckpt_path)
    metrics = final_metrics(fitted.trainer, fitted.wall_time_s)
    fitting.record(fitted, metrics, cfg.output_dir, KEY_PARAMS)
    if fitted.trainer.is_global_zero:
        print_summary("train", summary(metrics), cfg.output_dir)
    return metrics


def summary(metrics: dict[str, float]) -> str:
    """`val/loss 0.0412 after 40 epochs (840 steps, 263 s)`: the run's key result."""
    val_loss = metrics.get("val/loss")
    loss = f"val/loss {val_loss:.4g}" if val_loss is not None else "no validation"
    return (
        f"{loss} after {metrics['epochs']} epochs "
        f"({metrics['global_step']} steps, {metrics['wall_time_s']:.0f} s)"
    )


def objective(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweeper optimises: `metrics[name]` (None where no metric is asked for)."""
    if name is None:
        return None
    if name not in metrics:
        logged = ", ".join(sorted(metrics))
        raise ConfigError(f"optimized_metric={name!r}: the run never logged it; it logged {logged}")
    return metrics[name]


def validate_objective(cfg: DictConfig) -> None:
    """A FID objective that callbacks.fid will not log fails before training, not after it."""
    name = cfg.optimized_metric
    require(name is None or isinstance(name, str), "optimized_metric", name, "must be a key")
    if name is None or not name.startswith(tags.TRAINING_FID_PREFIX):
        return
    fid = cfg.callbacks.get("fid") or {}
    on = bool(fid.get("every_n_epochs"))
    require(on, "optimized_metric", name, "callbacks.fid is off (callbacks.fid.every_n_epochs=0)")
    classes = cfg.data.get("num_classes")
    if isinstance(classes, int):
        tag = tags.training_fid(fid.per_class * classes)
        require(name == tag, "optimized_metric", name, f"callbacks.fid logs {tag}")
