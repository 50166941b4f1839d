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
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from diffusion_lab.cli import config_files, write_json
from diffusion_lab.lit.checkpoint import sigterm_stop
from diffusion_lab.lit.loggers import check_logger_packages, close_loggers
from diffusion_lab.lit.run import StoreRunConfig


def build_logger(logger_cfg: DictConfig, resume_step: int | None) -> Logger:
    """A configured logger; resuming at step k, a TensorBoard one first hides its steps >= k
    and a CSV one writes a new file.

    The interrupted run may have logged steps after its checkpoint; the resumed run logs them
    again, so without the purge TensorBoard would draw those steps twice. Lightning's CSV logger
    deletes the metrics.csv it finds, so a resumed run writes `csv/resumed_step<k>/` beside it.
    """
    cls = get_class(logger_cfg._target_)
    if resume_step is not None and issubclass(cls, TensorBoardLogger):
        return instantiate(logger_cfg, purge_step=resume_step)
    if resume_step is not None and issubclass(cls, CSVLogger):
        return instantiate(logger_cfg, version=f"resumed_step{resume_step:07d}")
    return instantiate(logger_cfg)


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


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a plain config dict (None where it is absent)."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def hparam_value(value: Any) -> Any:
    """A value TensorBoard's HParams accepts: scalars as they are, lists as `[a,b]`, else text."""
    if isinstance(value, (list, ListConfig)):
        return "[" + ",".join(map(str, value)) + "]"
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def default_choices(config_name: str) -> dict[str, Any]:
    """The group choices of a primary config's defaults list (e.g. train: data=cifar10)."""
    primary = OmegaConf.create((config_files() / f"{config_name}.yaml").read_text())
    return {
        k: v
        for entry in primary.defaults
        if isinstance(entry, DictConfig)
        for k, v in entry.items()
    }


def overridden(run_config: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """The keys this job sets on the command line or by its sweep, with their values.

    A config group (a folder of conf/) is logged as `group/<name>` with the option chosen.
    """
    params = {}
    for override in OverridesParser.create().parse_overrides(
        list(HydraConfig.get().overrides.task)
    ):
        key = override.key_or_group
        if override.is_delete() or key == "output_dir":
            continue
        if (config_files() / key).is_dir():
            # A list of options (`experiment=[quickstart,part3_beta_T]`) has no runtime choice.
            params[f"group/{key}"] = choices.get(key, override.value())
        else:
            params[key] = lookup(run_config, key)
    return params


def hparams_table(run_config: dict[str, Any], key_params: Sequence[str]) -> dict[str, Any]:
    """What a sweep compares: the job's overrides, group choices off the defaults, `key_params`.

    Constants and nulls are left out: TensorBoard shows 5 HParams columns at first, and the
    keys a sweep varies should be among them (TensorBoard puts the keys that differ first).
    """
    params: dict[str, Any] = {}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
        params.update(overridden(run_config, choices))
        defaults = default_choices(hydra_cfg.job.config_name)
        params.update({f"group/{k}": v for k, v in choices.items() if v != defaults.get(k)})
    params.update({k: run_config[k] for k in key_params if k in run_config})
    return {k: hparam_value(v) for k, v in params.items() if v is not None}


def write_hparams(logger: Logger, params: dict[str, Any]) -> None:
    """The HParams entry of a run; for TensorBoard, its session start and end only; for the
    other loggers their own `log_hyperparams` (MLflow params, W&B config, CSV hparams.yaml).

    Lightning would also write TensorBoard's experiment summary and the metrics as scalars at
    step 0. Without an experiment summary TensorBoard builds the table from all runs: every
    key of any run, those that differ between runs first, and as metrics the last value of
    every scalar curve, so no single-point `final/` cards are needed.
    """
    if not isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(params)
        return
    _, start, end = hparams_summaries(params, {})
    # The logger's own writer, as Lightning's log_hyperparams uses, so they share the run's file.
    writer = logger.experiment._get_file_writer()
    writer.add_summary(start)
    writer.add_summary(end)
    writer.flush()


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
