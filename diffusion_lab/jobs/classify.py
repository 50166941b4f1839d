"""What `python -m diffusion_lab.classify` does, callable in-process: fit a classifier on the
training set of the mode, validate on the real validation split every epoch, test once on the
real test split, then write metrics.json and the HParams entry. With `modes` or `seeds` set,
every mode x seed pair trains as one batched model instead (`diffusion_lab.jobs.ensemble`)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from diffusion_lab.cli.entry_points import print_summary
from diffusion_lab.config.classify import validate_classify_config
from diffusion_lab.config.data import infer_num_classes
from diffusion_lab.data import ClassificationDataModule
from diffusion_lab.jobs import fitting
from diffusion_lab.jobs.ensemble import classify_ensemble, ensemble_requested
from diffusion_lab.lit.classifier import ClassifierModule

# The study's key settings: in every run's HParams entry, whether set or not (nulls left out).
KEY_PARAMS = ("mode", "seed", "lr", "epochs", "batch_size", "generated_per_class", "real_per_class")


def swept_modes() -> tuple[str, ...]:
    """The modes listed in this multirun's `hydra.sweeper.params` (none outside such a sweep)."""
    if not HydraConfig.initialized():
        return ()
    params = HydraConfig.get().sweeper.get("params") or {}
    return tuple(m.strip() for m in str(params.get("mode", "")).split(",") if m.strip())


def resolve_mode(cfg: DictConfig) -> None:
    """mode=auto becomes `augmented` when a generated set is given, else `real`."""
    if cfg.mode == "auto":
        cfg.mode = "augmented" if cfg.synthetic is not None else "real"


def logged_scalars(trainer: pl.Trainer) -> dict[str, float]:
    """The trainer's latest train/, val/ and test/ scalars (trainer.test replaces the others)."""
    return {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("train/", "val/", "test/"))
    }


def final_metrics(
    trainer: pl.Trainer,
    module: ClassifierModule,
    datamodule: ClassificationDataModule,
    cfg: DictConfig,
) -> dict[str, Any]:
    """Test accuracy (overall and per class) and the run's data; call right after trainer.test."""
    metrics: dict[str, Any] = logged_scalars(trainer)
    per_class = module.test_results["per_class_acc"].tolist()
    metrics["test/per_class_acc"] = dict(zip(datamodule.class_names, per_class, strict=True))
    metrics.update(
        {
            "mode": cfg.mode,
            "seed": cfg.seed,
            "n_real": datamodule.n_real,
            "n_generated": datamodule.n_generated,
            "synthetic": cfg.synthetic,
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
        }
    )
    return metrics


def validate_classify_run(cfg: DictConfig) -> None:
    """What `classify` checks before any work: the classes of the data, then the config."""
    infer_num_classes(cfg.data)
    validate_classify_config(cfg, swept_modes())


def classify(cfg: DictConfig) -> dict[str, Any]:
    """Validate, fit, test once, then write metrics.json and the HParams entry."""
    validate_classify_run(cfg)
    resolve_mode(cfg)
    if ensemble_requested(cfg):
        return classify_ensemble(cfg)
    fitted = fitting.fit(cfg, cfg.datamodule)
    fit_metrics = logged_scalars(fitted.trainer)
    start = time.perf_counter()
    fitted.trainer.test(fitted.module, datamodule=fitted.datamodule, verbose=False)
    metrics = fit_metrics | final_metrics(fitted.trainer, fitted.module, fitted.datamodule, cfg)
    metrics["wall_time_s"] = fitted.wall_time_s + time.perf_counter() - start
    fitting.record(fitted, metrics, cfg.output_dir, KEY_PARAMS)
    if fitted.trainer.is_global_zero:
        result = f"test/acc {100 * metrics['test/acc']:.2f} % (mode {cfg.mode}, seed {cfg.seed})"
        print_summary("classify", result, cfg.output_dir)
    return metrics
