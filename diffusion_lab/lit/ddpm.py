"""The class-conditional DDPM as a LightningModule: training, validation and optimiser glue.

The math lives in `diffusion_lab.diffusion`; this module only samples t, eps and label
dropout, calls the loss and logs. EMA weights come from the WarmupEMA callback (Lightning's
WeightAveraging), which swaps them in for validation and writes them as the checkpoint's state_dict.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from diffusion_lab.diffusion import NoiseSchedule, drop_labels, eps_mse
from diffusion_lab.lit.lr_schedules import optimizers_with_step_schedule
from diffusion_lab.nets.speed import compiled, should_compile
from diffusion_lab.tracking import tags

OptimizerFactory = Callable[..., Optimizer]
LRScheduleFactory = Callable[[Optimizer, int], LRScheduler]


class DDPMModule(pl.LightningModule):
    """Trains eps_theta(x_t, t, y) with the simplified loss and classifier-free label dropout.

    Args:
        net: the conditional network; it must expose `null_label` (the extra label index).
        schedule: the noise schedule.
        optimizer: partial optimizer, called with the parameters.
        lr_schedule: partial scheduler, called with (optimizer, total_steps); stepped per step.
        p_uncond: probability of replacing a label with the null label in training.
        val_buckets: validation loss is also logged for this many equal ranges of t.
        val_seed: seeds validation noise and steps, so validation loss compares across epochs.
        channels_last: store weights and training batches as NHWC, before the EMA copy is made.
        compile: torch.compile the network's training forward (true, false, "auto": CUDA only).
        compile_mode: the torch.compile mode (see `diffusion_lab.nets.speed.COMPILE_MODES`).
        fused_optimizer: build the optimizer with `fused=True` (one kernel for all parameters).
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        optimizer: OptimizerFactory,
        lr_schedule: LRScheduleFactory | None = None,
        p_uncond: float = 0.1,
        val_buckets: int = 4,
        val_seed: int = 0,
        channels_last: bool = False,
        compile: bool | str = False,
        compile_mode: str = "default",
        fused_optimizer: bool = False,
    ) -> None:
        super().__init__()
        # Components are rebuilt from the run config stored in each checkpoint (see checkpoint.py).
        self.save_hyperparameters(
            ignore=["net", "schedule", "optimizer", "lr_schedule"], logger=False
        )
        self.net = net
        self.schedule = schedule
        self.optimizer_factory = optimizer
        self.lr_schedule_factory = lr_schedule
        self.p_uncond = p_uncond
        self.val_seed = val_seed
        self.bucket_edges = torch.linspace(0, schedule.T, val_buckets + 1).round().long().tolist()
        self.val_bucket_loss = nn.ModuleList(MeanMetric() for _ in range(val_buckets))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        self.compile_setting = compile
        self.compile_mode = compile_mode
        self.fused_optimizer = fused_optimizer
        # The network's forward compiled for training_step (None: run the network eagerly).
        self.compiled_forward: Callable[..., Tensor] | None = None

    def on_fit_start(self) -> None:
        """Compile the training forward, once the module is on its device.

        Only the training forward is compiled: validation and sample grids run eagerly and cost
        no extra compilations, and the EMA copy and the checkpoints hold the plain module.
        """
        if should_compile(self.compile_setting, self.device):
            self.compiled_forward = compiled(self.net.forward, self.compile_mode)

    def diffusion_loss(self, x0: Tensor, labels: Tensor) -> Tensor:
        """The training objective of one batch: eps-MSE at uniform t (Ho et al. 2020, eq. 14),
        with labels dropped at rate p_uncond for classifier-free guidance."""
        x0 = x0.contiguous(memory_format=self.memory_format)
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=x0.device)
        # Drawn in the standard layout, so NHWC batches see the same noise as NCHW ones.
        eps = torch.randn(x0.shape, device=x0.device).contiguous(memory_format=self.memory_format)
        labels = drop_labels(labels, self.p_uncond, self.net.null_label)
        net = self.net if self.compiled_forward is None else self.compiled_forward
        return eps_mse(net, self.schedule, x0, t, eps, labels).mean()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(*batch)
        # For callback_metrics only: a logged or displayed step value is read back to the host
        # (a GPU sync); LossCurve writes every step's loss to the loggers once an epoch.
        self.log(tags.TRAIN_LOSS, loss, on_step=True, on_epoch=False, logger=False)
        self.log(tags.TRAIN_LOSS_EPOCH, loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x0, labels = batch
        generator = torch.Generator(device=self.device).manual_seed(self.val_seed + batch_idx)
        t = self.stratified_steps(x0.shape[0], generator)
        eps = torch.randn(x0.shape, device=self.device, generator=generator)
        losses = eps_mse(self.net, self.schedule, x0, t, eps, labels)
        self.log(
            tags.VAL_LOSS, losses.mean(), prog_bar=True, sync_dist=True, batch_size=len(losses)
        )
        buckets = zip(self.bucket_edges[:-1], self.bucket_edges[1:], strict=True)
        for (lo, hi), metric in zip(buckets, self.val_bucket_loss, strict=True):
            in_bucket = (t >= lo) & (t < hi)
            metric.update(losses[in_bucket])
            self.log(tags.val_loss_bucket(lo, hi - 1), metric, on_epoch=True)

    def stratified_steps(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """One step per equal slice of [0, T): an unbiased, lower-variance estimate of the loss."""
        u = torch.rand(batch_size, device=self.device, generator=generator)
        positions = (torch.arange(batch_size, device=self.device) + u) / batch_size
        return (positions * self.schedule.T).long().clamp_(max=self.schedule.T - 1)

    def configure_optimizers(self) -> dict:
        factory = self.optimizer_factory
        if self.fused_optimizer:
            if "16" in str(self.trainer.precision) and "bf16" not in str(self.trainer.precision):
                warnings.warn(
                    "perf.fused_optimizer=true: fp16 loss scaling cannot clip gradients of a "
                    "fused optimizer; using the unfused one",
                    stacklevel=2,
                )
            else:
                factory = functools.partial(factory, fused=True)
        return optimizers_with_step_schedule(
            self, self.net.parameters(), factory, self.lr_schedule_factory
        )

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by norm as Lightning does, also for a fused optimizer under bf16.

        Lightning refuses to clip for fused optimizers under any mixed precision, because fp16's
        gradient scaler unscales inside their step; bf16 has no scaler, so clipping is exact.
        """
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if gradient_clip_val and scaler is None and gradient_clip_algorithm in (None, "norm"):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
