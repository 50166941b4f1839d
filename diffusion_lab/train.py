"""`python -m diffusion_lab.train`: train a class-conditional DDPM (defaults: study Part 1)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from diffusion_lab.cli import CONFIG_DIR, report_user_errors, write_json
from diffusion_lab.config import require, validate_train_config
from diffusion_lab.lit.callbacks import StoreRunConfig, Throughput
from diffusion_lab.nets.speed import bf16_usable, resolve_switch, use_tf32


def build_trainer(cfg: DictConfig, run_config: dict[str, Any]) -> pl.Trainer:
    """The Trainer with the configured callbacks (in config order) and loggers."""
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] + [StoreRunConfig(run_config)]
    loggers = [instantiate(c) for c in cfg.logger.values()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)


def hparams_table(run_config: dict[str, Any]) -> dict[str, Any]:
    """What a sweep compares: top-level scalars, the network's settings and the group choices."""
    params = {k: v for k, v in run_config.items() if not isinstance(v, (dict, list))}
    params.update({f"model/{k}": v for k, v in run_config["model"].items() if k != "_target_"})
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        # A list choice (`experiment=[quickstart,part3_beta_T]`) would be dropped from HParams.
        params.update(
            {
                f"group/{k}": v if v is None or isinstance(v, str) else ",".join(map(str, v))
                for k, v in choices.items()
                if not k.startswith("hydra")
            }
        )
    params.pop("output_dir", None)
    return params


def final_metrics(trainer: pl.Trainer, wall_time_s: float) -> dict[str, float]:
    """The last epoch's logged scalars plus run size and wall time."""
    metrics = {
        k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Validate, build from the config, fit, then write metrics.json and the HParams entry."""
    validate_train_config(cfg)
    cfg.trainer.precision = usable_precision(cfg.trainer.precision, training_device(cfg))
    # Resolved before the module is built (and recorded so in the run config).
    cfg.perf.channels_last = resolve_switch(cfg.perf.channels_last, training_device(cfg))
    use_tf32(cfg.perf.tf32)
    if cfg.ckpt_path is not None:
        require(
            Path(cfg.ckpt_path).is_file(), "ckpt_path", cfg.ckpt_path, "no such checkpoint file"
        )
    datamodule = instantiate(cfg.data)
    if rank_zero_only.rank == 0:
        datamodule.prepare_data()  # missing data fails here, before any output is written
    pl.seed_everything(cfg.seed, workers=True)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    # For generate and report: an image folder's class names come from its folders, not the config.
    run_config["class_names"] = list(datamodule.class_names)
    module = instantiate(cfg.module)
    trainer = build_trainer(cfg, run_config)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = final_metrics(trainer, time.perf_counter() - start)
    if trainer.is_global_zero:
        write_json(metrics, Path(cfg.output_dir) / "metrics.json")
        # Lightning also writes these metrics as scalars at step 0: a prefix keeps them off the
        # training curves of the same names.
        final = {f"final/{k}": v for k, v in metrics.items()}
        for logger in trainer.loggers:
            logger.log_hyperparams(hparams_table(run_config), final)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final validation loss for sweepers that optimise it."""
    return train(cfg).get("val/loss")


if __name__ == "__main__":
    main()
