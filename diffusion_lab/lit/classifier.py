"""An image classifier as a LightningModule: cross-entropy training, accuracy and confusion matrix.

Batches arrive scaled to [-1, 1] and augmented by the datamodule (`on_after_batch_transfer`).
The test split is meant to be evaluated once, at the end: `test_results` then holds the
accuracy, the per-class accuracy and the confusion matrix for the entry point and callbacks.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from diffusion_lab.data.tensors import to_signed_unit
from diffusion_lab.lit.ddpm import LRScheduleFactory, OptimizerFactory
from diffusion_lab.lit.lr_schedules import optimizers_with_step_schedule
from diffusion_lab.tracking import tags


class ClassifierModule(pl.LightningModule):
    """Trains `net` (images -> logits) with label-smoothed cross-entropy.

    Args:
        net: the classifier; when it has `fit_whitening(x)`, that is called once before
            training with the whole (unaugmented) training set scaled to [-1, 1].
        optimizer: partial optimizer, called with the parameters.
        lr_schedule: partial scheduler, called with (optimizer, total_steps); stepped per step.
        label_smoothing: of the training loss (Szegedy et al. 2016); validation uses plain CE.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        lr_schedule: LRScheduleFactory | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_schedule"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.lr_schedule_factory = lr_schedule
        self.label_smoothing = label_smoothing
        k = net.num_classes
        self.val_acc = MulticlassAccuracy(k, average="micro")
        self.test_acc = MulticlassAccuracy(k, average="micro")
        self.test_per_class = MulticlassAccuracy(k, average=None)
        self.test_confusion = MulticlassConfusionMatrix(k)
        self.test_results: dict[str, Tensor] = {}

    def setup(self, stage: str) -> None:
        """Fit the network's input whitening on the training images before the first step."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and hasattr(self.net, "fit_whitening") and datamodule is not None:
            self.net.fit_whitening(to_signed_unit(datamodule.train_set.images))

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) in [-1, 1] -> logits (N, num_classes)."""
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, labels = batch
        loss = F.cross_entropy(self(x), labels, label_smoothing=self.label_smoothing)
        # For callback_metrics only: a logged or displayed step value is read back to the host
        # (a GPU sync); LossCurve writes every step's loss to the loggers once an epoch.
        self.log(tags.TRAIN_LOSS, loss, on_step=True, on_epoch=False, logger=False)
        self.log(
            tags.TRAIN_LOSS_EPOCH, loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True
        )
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, labels = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), labels)
        self.val_acc.update(logits, labels)
        self.log(tags.VAL_LOSS, loss, prog_bar=True, sync_dist=True, batch_size=len(labels))
        self.log(tags.VAL_ACC, self.val_acc, prog_bar=True, on_epoch=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, labels = batch
        logits = self(x)
        for metric in (self.test_acc, self.test_per_class, self.test_confusion):
            metric.update(logits, labels)
        self.log(tags.TEST_ACC, self.test_acc, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        """Keep the per-class accuracy and confusion matrix (synced over ranks) for the callers."""
        self.test_results = {
            "per_class_acc": self.test_per_class.compute().cpu(),
            "confusion": self.test_confusion.compute().cpu(),
        }
        self.test_per_class.reset()
        self.test_confusion.reset()

    def configure_optimizers(self) -> dict:
        return optimizers_with_step_schedule(
            self, self.net.parameters(), self.optimizer_factory, self.lr_schedule_factory
        )


@torch.no_grad()
def normalized_confusion(confusion: Tensor) -> Tensor:
    """Rows divided by their sums: entry (i, j) is the share of class i predicted as j."""
    return confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1)
