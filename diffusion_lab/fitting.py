"""The fit sequence that `train` and `classify` share: build from the config, fit, record.

Data is prepared on rank 0 before anything else is built, so missing or mismatched data
stops the run before any output is written. Only rank 0 writes metrics.json and HParams.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from diffusion_lab.cli import write_json
from diffusion_lab.lit.run import StoreRunConfig


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


@dataclass
class Fit:
    """A finished `trainer.fit` with what was built for it."""

    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    run_config: dict[str, Any]
    wall_time_s: float


def fit(cfg: DictConfig, datamodule_cfg: DictConfig, ckpt_path: str | None = None) -> Fit:
    """Prepare the data (rank 0), seed, build `cfg.module` and the trainer, and fit."""
    datamodule = instantiate(datamodule_cfg)
    if rank_zero_only.rank == 0:
        datamodule.prepare_data()  # missing data fails here, before any output is written
    pl.seed_everything(cfg.seed, workers=True)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    # For generate and report: an image folder's class names come from its folders.
    run_config["class_names"] = list(getattr(datamodule, "class_names", ()))
    module = instantiate(cfg.module)
    trainer = build_trainer(cfg, run_config)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return Fit(trainer, module, datamodule, run_config, time.perf_counter() - start)


def record(fitted: Fit, metrics: dict[str, Any], output_dir: str, final: dict[str, float]) -> None:
    """On rank 0: metrics.json, and the HParams entry of the run's settings with `final`."""
    if not fitted.trainer.is_global_zero:
        return
    write_json(metrics, Path(output_dir) / "metrics.json")
    for logger in fitted.trainer.loggers:
        logger.log_hyperparams(hparams_table(fitted.run_config), final)
