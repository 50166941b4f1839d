"""A run's HParams entry: what a sweep compares (overrides, group choices, key settings), written
to each logger in the form it takes (TensorBoard's HParams tab, MLflow params, W&B config)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from diffusion_lab.config.source import config_files


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
        choices = {
            k: v
            for k, v in hydra_cfg.runtime.choices.items()
            if not k.startswith("hydra") and k != "schema"
        }
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
