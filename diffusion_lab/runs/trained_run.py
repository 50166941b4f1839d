"""A trained DDPM run: its network and schedule, its data spec and stored config, and sampling.

Every consumer of a trained model goes through `TrainedRun`: the sample grids of `train`,
`generate`, `report` and `evaluate`. The samplers themselves stay pure functions in
`diffusion_lab.diffusion`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor

from diffusion_lab.data.tensors import from_signed_unit
from diffusion_lab.diffusion.samplers import Progress
from diffusion_lab.lit.ddpm import DDPMModule
from diffusion_lab.nets.speed import compiled, resolve_switch, should_compile
from diffusion_lab.runs.checkpoints import RUN_CONFIG_KEY, load_weights, read_checkpoint
from diffusion_lab.runs.data_spec import DataSpec
from diffusion_lab.utils.errors import UserFacingError

Sampler = Callable[..., Tensor]


class NonFiniteSamples(UserFacingError):
    """A sampler returned NaN or Inf values, which would be written as black pixels."""


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
