"""What each configured logger (conf/logger/) gets beyond scalars, in the form it supports.

| logger | figures | HParams entry (`tracking.hparams.write_hparams`) |
| --- | --- | --- |
| TensorBoard | figures at their step | the HParams tab's session |
| MLflow | artifacts `<tag>/step<NNNNNNN>.png` | params |
| Weights & Biases | images at their step | the run config |
| CSV (and any other) | skipped, one warning per logger | `hparams.yaml` |

A logger whose package is missing stops the run before any work, in one line naming the
package and the extra that installs it.
"""

from __future__ import annotations

import importlib.util
import logging
import weakref
from collections.abc import Iterable

from hydra.utils import get_class, instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig
from pytorch_lightning.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)

from diffusion_lab.tracking.tensorboard import RunTensorBoardLogger
from diffusion_lab.utils.errors import ConfigError

log = logging.getLogger(__name__)

# Logger class -> (module it imports, pip package, extra of this project that installs it).
PACKAGES: dict[type[Logger], tuple[str, str, str]] = {
    MLFlowLogger: ("mlflow", "mlflow-skinny", "mlflow"),
    WandbLogger: ("wandb", "wandb", "wandb"),
}


def check_logger_packages(loggers: DictConfig) -> None:
    """Every configured logger's package is installed; else one line naming it and its extra."""
    for name, node in loggers.items():
        cls = get_class(node._target_)
        for base, (module, package, extra) in PACKAGES.items():
            if issubclass(cls, base) and importlib.util.find_spec(module) is None:
                raise ConfigError(
                    f"logger={name}: needs the package {package}, which is not installed: "
                    f'pip install -e ".[{extra}]"'
                )


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


# What each logger was already warned about: one warning per logger and kind, not per step.
_warned: weakref.WeakKeyDictionary[Logger, set[str]] = weakref.WeakKeyDictionary()


def skip_once(logger: Logger, what: str) -> None:
    """Warn, once for this logger, that it gets no `what`."""
    seen = _warned.setdefault(logger, set())
    if what not in seen:
        seen.add(what)
        name = type(logger).__name__
        log.warning(f"{name} takes no {what}: skipped there (the run folder has them)")


def log_figure(loggers: Iterable[Logger], tag: str, figure: Figure, step: int) -> None:
    """A matplotlib figure to every logger that takes figures (see the module's table)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, step, close=False)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, figure, f"{tag}/step{step:07d}.png")
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [figure], step=step)
        else:
            skip_once(logger, "figures")


def close_loggers(loggers: Iterable[Logger]) -> None:
    """End the run in each logger once everything is written (a sweep's next job is a new run).

    TensorBoard's event file is closed (Lightning only flushes it, see RunTensorBoardLogger);
    a W&B run is finished, else the next job of an in-process sweep would log into it.
    """
    for logger in loggers:
        if isinstance(logger, RunTensorBoardLogger):
            logger.close()
        elif isinstance(logger, WandbLogger):
            logger.experiment.finish()
