"""The fit sequence that `train` and `classify` share: build from the config, fit, record.

Data is prepared and set up on rank 0 before anything else is built, so missing or mismatched
data stops the run before any output is written. Only rank 0 writes metrics.json and HParams.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from diffusion_lab.lit.checkpoint import sigterm_stop
from diffusion_lab.runs.checkpoints import StoreRunConfig
from diffusion_lab.tracking.hparams import hparams_table, write_hparams
from diffusion_lab.tracking.loggers import build_logger, check_logger_packages, close_loggers
from diffusion_lab.utils.files import write_json


def build_trainer(
    cfg: DictConfig, run_config: dict[str, Any], resume_step: int | None = None
) -> pl.Trainer:
    """The Trainer with the configured callbacks (in config order) and loggers."""
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] + [StoreRunConfig(run_config)]
    loggers = [build_logger(c, resume_step) for c in cfg.logger.values()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)


def checkpoint_step(ckpt_path: str) -> int:
    """The optimizer step a checkpoint was saved at (its tensors are mapped, not read)."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return int(checkpoint["global_step"])


@dataclass
class Fit:
    """A finished `trainer.fit` with what was built for it."""

    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    run_config: dict[str, Any]
    wall_time_s: float


def fit(cfg: DictConfig, datamodule_cfg: DictConfig, ckpt_path: str | None = None) -> Fit:
    """Check the loggers' packages, prepare the data (rank 0), seed, build `cfg.module` and the
    trainer, and fit."""
    check_logger_packages(cfg.logger)
    datamodule = instantiate(datamodule_cfg)
    if rank_zero_only.rank == 0:
        datamodule.prepare_data()  # missing data fails here, before any output is written
        # So do checks that need the loaded data (the batch size against the set): Lightning
        # would set up the data only after its loggers have written their first files.
        datamodule.setup("fit")
    pl.seed_everything(cfg.seed, workers=True)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    # For generate and report: an image folder's class names come from its folders.
    run_config["class_names"] = list(getattr(datamodule, "class_names", ()))
    module = instantiate(cfg.module)
    trainer = build_trainer(cfg, run_config, checkpoint_step(ckpt_path) if ckpt_path else None)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException as stop:  # raised by Lightning between steps or during validation
        raise sigterm_stop(trainer) from stop
    return Fit(trainer, module, datamodule, run_config, time.perf_counter() - start)


def record(
    fitted: Fit, metrics: dict[str, Any], output_dir: str, key_params: Sequence[str]
) -> None:
    """On rank 0: metrics.json and the HParams entry of the run's settings (see hparams_table),
    then end the run in its loggers."""
    if not fitted.trainer.is_global_zero:
        return
    write_json(metrics, Path(output_dir) / "metrics.json")
    for logger in fitted.trainer.loggers:
        write_hparams(logger, hparams_table(fitted.run_config, key_params))
    close_loggers(fitted.trainer.loggers)
