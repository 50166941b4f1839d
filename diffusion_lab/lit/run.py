"""A trained run: its stored config, its data spec, its network and schedule, and sampling.

Every consumer of a trained model goes through `TrainedRun`: the sample grids of `train`,
`generate`, `report` (and `evaluate`). The writer of the stored run config (`StoreRunConfig`)
and its reader (`load_ddpm`) live here together, so the checkpoint format has one owner.
The samplers themselves stay pure functions in `diffusion_lab.diffusion`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from torch import Tensor

from diffusion_lab.data.tensors import from_signed_unit
from diffusion_lab.diffusion.samplers import Progress
from diffusion_lab.errors import UserFacingError
from diffusion_lab.lit.ddpm import DDPMModule
from diffusion_lab.lit.guard import all_finite
from diffusion_lab.nets.speed import compiled, resolve_switch, should_compile

RUN_CONFIG_KEY = "diffusion_lab_run_config"
Sampler = Callable[..., Tensor]


class NonFiniteSamples(UserFacingError):
    """A sampler returned NaN or Inf values, which would be written as black pixels."""


class StoreRunConfig(pl.Callback):
    """Writes the run config into every checkpoint, so a checkpoint alone rebuilds its model."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.config


def read_checkpoint(path: str | Path, key: str, map_location: Any = "cpu") -> dict[str, Any]:
    """A diffusion_lab training checkpoint, read; `key` (ckpt, ckpt_path) names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"{key}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch.load raises many types (unpickling, zip, EOF) for a foreign file
        raise UserFacingError(f"{key}={path}: not a PyTorch checkpoint file") from None
    config = checkpoint.get(RUN_CONFIG_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or "module" not in config or "state_dict" not in checkpoint:
        raise UserFacingError(
            f"{key}={path}: not a diffusion_lab training checkpoint (no stored run config)"
        )
    return checkpoint


def load_weights(
    module: pl.LightningModule, checkpoint: dict[str, Any], key: str, path: Any, builder: str
) -> None:
    """The checkpoint's weights into `module` (built by `builder`): one line where they do not
    fit or hold NaN."""
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # a config from another version of the code, or edited weights
        raise UserFacingError(
            f"{key}={path}: its weights do not fit the model {builder} builds "
            f"({type(err).__name__}); a checkpoint from an incompatible config or version"
        ) from None
    if not all_finite(list(module.state_dict().values())):
        raise UserFacingError(
            f"{key}={path}: its weights hold NaN or Inf values (a diverged run); "
            "use a checkpoint written before the divergence"
        )


def load_ddpm(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DDPMModule, dict[str, Any]]:
    """The module with the checkpoint's weights (EMA weights when EMA was on) and its run config."""
    checkpoint = read_checkpoint(path, "ckpt", map_location)
    config = checkpoint[RUN_CONFIG_KEY]
    try:
        module = instantiate(config["module"])
    except Exception as err:  # a config from another version of the code
        raise UserFacingError(
            f"ckpt={path}: its stored config does not build a model ({type(err).__name__}); "
            "a checkpoint from an incompatible version"
        ) from None
    if not isinstance(module, DDPMModule):
        raise UserFacingError(f"ckpt={path}: holds a {type(module).__name__}, not a DDPM")
    load_weights(module, checkpoint, "ckpt", path, "its stored config")
    return module.eval(), config


def check_resumable(path: str | Path, module: pl.LightningModule) -> None:
    """A checkpoint `train` can resume from: readable, ours, and fitting this config's `module`."""
    load_weights(module, read_checkpoint(path, "ckpt_path"), "ckpt_path", path, "this config")


@dataclass(frozen=True)
class DataSpec:
    """What a run's images look like: channels, size, classes (names where known)."""

    channels: int
    img_size: int
    num_classes: int
    class_names: tuple[str, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.channels, self.img_size, self.img_size

    @classmethod
    def of_datamodule(cls, datamodule: Any) -> DataSpec:
        """The spec of a live ImageDataModule."""
        names = tuple(datamodule.class_names) or None
        return cls(datamodule.channels, datamodule.img_size, datamodule.num_classes, names)

    @classmethod
    def of_run_config(cls, config: dict[str, Any], source: str) -> DataSpec:
        """The spec stored in a run config; `source` names the checkpoint in the error."""
        try:
            data = config["data"]
            keys = ("channels", "img_size", "num_classes")
            channels, size, classes = (int(data[k]) for k in keys)
            # Recorded by train (an image folder's come from its folders); else the data class's.
            names = config.get("class_names")
            if names is None:
                names = getattr(get_class(data["_target_"]), "class_names", ())
            names = tuple(names)
        except (KeyError, TypeError, ImportError, ValueError):
            raise UserFacingError(
                f"ckpt={source}: its stored config lacks data.num_classes/img_size/channels"
            ) from None
        return cls(channels, size, classes, names if len(names) == classes else None)


class TrainedRun:
    """A DDPM with its data spec and run config, ready to sample from.

    `forward` is what the samplers call: the network itself, or its compiled forward after
    `use_fast_paths`. A run built from a live module (the sample grids during training) samples
    whatever weights the module holds; one loaded from a checkpoint holds the EMA weights.
    """

    def __init__(
        self, module: DDPMModule, spec: DataSpec, config: dict[str, Any] | None = None
    ) -> None:
        self.module = module
        self.spec = spec
        self.config = config
        self.forward: Callable[..., Tensor] = module.net
        self.memory_format = torch.contiguous_format

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> TrainedRun:
        """The run of a training checkpoint (its EMA weights), in eval mode."""
        module, config = load_ddpm(path, map_location)
        return cls(module, DataSpec.of_run_config(config, str(path)), config)

    @property
    def device(self) -> torch.device:
        return self.module.device

    def to(self, device: str | torch.device) -> TrainedRun:
        self.module.to(device)
        return self

    def use_fast_paths(
        self, compile: bool | str, compile_mode: str, channels_last: bool | str
    ) -> None:
        """NHWC weights and a compiled forward for sampling ("auto": on CUDA only)."""
        if resolve_switch(channels_last, self.device):
            self.memory_format = torch.channels_last
            self.module.net.to(memory_format=self.memory_format)
        if should_compile(compile, self.device):
            self.forward = compiled(self.module.net.forward, compile_mode)

    def default_sampler(self) -> Sampler:
        """The sampler the run was trained with (from its stored config)."""
        if self.config is None:
            raise ValueError("a run without a stored config has no default sampler")
        return instantiate(self.config["sampler"])

    def sample(
        self,
        labels: Tensor,
        seed: int | torch.Generator,
        sampler: Sampler | None = None,
        *,
        w: float | None = None,
        steps: int | None = None,
        progress: Progress | None = None,
    ) -> Tensor:
        """uint8 images (len(labels), C, H, W) for `labels`, on the labels' device.

        `seed` is an int (a fresh generator on the device) or a generator to continue: x_T is
        drawn from it first, then the sampler's per-step noise. `w` and `steps` override the
        sampler's guidance weight and step count (DDIM). Runs in eval mode, then restores.
        """
        generator = seed
        if isinstance(seed, int):
            generator = torch.Generator(device=labels.device).manual_seed(seed)
        overrides = {k: v for k, v in (("w", w), ("steps", steps)) if v is not None}
        sampler = functools.partial(sampler or self.default_sampler(), **overrides)
        shape = (len(labels), *self.spec.shape)
        x_T = torch.randn(shape, generator=generator, device=labels.device)
        net = self.module.net
        was_training = net.training
        net.eval()
        try:
            x0 = sampler(
                self.forward,
                self.module.schedule,
                x_T.contiguous(memory_format=self.memory_format),
                labels,
                generator,
                null_label=net.null_label,
                progress=progress,
            )
        finally:
            net.train(was_training)
        # from_signed_unit would turn NaN into black pixels; the images go to the host anyway.
        bad = int((~x0.isfinite()).flatten(1).any(1).sum())
        if bad:
            raise NonFiniteSamples(f"the sampler returned NaN or Inf for {bad} of {len(x0)} images")
        return from_signed_unit(x0.float())
