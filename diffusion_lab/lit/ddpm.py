"""The class-conditional DDPM as a LightningModule: training, validation and optimiser glue.

The math lives in `diffusion_lab.diffusion`; this module only samples t, eps and label
dropout, calls the loss and logs. EMA weights come from the WarmupEMA callback (Lightning's
WeightAveraging), which swaps them in for validation and writes them as the checkpoint's state_dict.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from diffusion_lab.diffusion import NoiseSchedule, drop_labels, eps_mse
from diffusion_lab.lit.lr_schedules import optimizers_with_step_schedule

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

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x0, labels = batch
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=self.device)
        eps = torch.randn_like(x0)
        labels = drop_labels(labels, self.p_uncond, self.net.null_label)
        loss = eps_mse(self.net, self.schedule, x0, t, eps, labels).mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x0, labels = batch
        generator = torch.Generator(device=self.device).manual_seed(self.val_seed + batch_idx)
        t = self.stratified_steps(x0.shape[0], generator)
        eps = torch.randn(x0.shape, device=self.device, generator=generator)
        losses = eps_mse(self.net, self.schedule, x0, t, eps, labels)
        self.log("val/loss", losses.mean(), prog_bar=True, sync_dist=True, batch_size=len(losses))
        buckets = zip(self.bucket_edges[:-1], self.bucket_edges[1:], strict=True)
        for (lo, hi), metric in zip(buckets, self.val_bucket_loss, strict=True):
            in_bucket = (t >= lo) & (t < hi)
            metric.update(losses[in_bucket])
            self.log(f"val/loss_t{lo:04d}-{hi - 1:04d}", metric, on_epoch=True)

    def stratified_steps(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """One step per equal slice of [0, T): an unbiased, lower-variance estimate of the loss."""
        u = torch.rand(batch_size, device=self.device, generator=generator)
        positions = (torch.arange(batch_size, device=self.device) + u) / batch_size
        return (positions * self.schedule.T).long().clamp_(max=self.schedule.T - 1)

    def configure_optimizers(self) -> dict:
        return optimizers_with_step_schedule(
            self, self.net.parameters(), self.optimizer_factory, self.lr_schedule_factory
        )
