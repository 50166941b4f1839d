"""The batched classifier stage as a LightningModule: every (mode, seed) member in one step.

A Lightning training batch is one segment of the members' schedule (`MemberSchedule`): the
module runs its batched steps back to back on the device, and Lightning validates after every
segment (`val_check_interval=1`); each member's validation is kept at the end of its own
epochs. A batched step gathers each member's batch from the uint8 pool on the device by its
epoch order, flips and crops it with keyed randomness, takes the gradient of the members' summed
losses with torch.func (the members do not interact, so each gets its own loss's gradient) and
updates the active members with `ensemble_adam_`. The step reads nothing back to the host, and
its shapes are fixed, so it can be compiled (`compile`).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad
from torch.utils.data import DataLoader

from diffusion_lab.data.members import MemberSchedule, epoch_order
from diffusion_lab.data.tensors import (
    InMemoryImages,
    already_batched,
    crop_at,
    hflip_where,
    to_signed_unit,
)
from diffusion_lab.nets.ensemble import CROP_STREAM, FLIP_STREAM, MLPEnsemble, keyed_uniform
from diffusion_lab.nets.ensemble_adam import AdamSettings, ensemble_adam_
from diffusion_lab.nets.speed import compiled, should_compile
from diffusion_lab.tracking import tags


class EnsembleClassifierModule(pl.LightningModule):
    """Trains the members of `ensemble` together, each on its own schedule.

    Args:
        ensemble: the stacked members, input whitening fitted on each member's training set.
        schedule: the members (mode, seed, range of the pool), batch size and epochs.
        pool: the training images of all members (real, then generated), moved to the device.
        val_set, test_set: the real validation and test splits.
        lr_table: float64 (M, S): member m's learning rate at its own step k (its schedule).
        adam: the optimizer's settings (Adam or AdamW, gradient clipping).
        label_smoothing: of the training loss; validation uses plain cross-entropy.
        random_flip, crop_padding: training augmentation, per member batch.
        eval_batch_size: images per validation or test batch.
        compile: torch.compile the batched step (true, false, "auto": CUDA only).
        compile_mode: the torch.compile mode (see `diffusion_lab.nets.speed.COMPILE_MODES`).
    """

    def __init__(
        self,
        ensemble: MLPEnsemble,
        schedule: MemberSchedule,
        pool: InMemoryImages,
        val_set: InMemoryImages,
        test_set: InMemoryImages,
        lr_table: Tensor,
        adam: AdamSettings,
        label_smoothing: float = 0.0,
        random_flip: bool = False,
        crop_padding: int = 0,
        eval_batch_size: int = 500,
        compile: bool | str = False,
        compile_mode: str = "default",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.ensemble, self.schedule, self.adam = ensemble, schedule, adam
        self.val_set, self.test_set = val_set, test_set
        self.label_smoothing = label_smoothing
        self.random_flip, self.crop_padding = random_flip, crop_padding
        self.eval_batch_size = eval_batch_size
        self.compile, self.compile_mode = compile, compile_mode
        members = schedule.members
        m, epochs = len(members), schedule.epochs
        state = {
            "images": pool.images,
            "labels": pool.labels,
            "starts": torch.tensor([member.start for member in members]),
            "order": torch.zeros(m, max(member.size for member in members), dtype=torch.int64),
            "position": torch.zeros(m, dtype=torch.int64),
            "active": torch.zeros(m, dtype=torch.bool),
            "steps": torch.zeros(m, dtype=torch.int64),
            "lr_table": lr_table,
            "train_losses": torch.full((m, schedule.num_steps), float("nan")),
            "train_epoch_loss": torch.full((m, epochs), float("nan")),
            "val_loss": torch.full((m, epochs), float("nan")),
            "val_acc": torch.full((m, epochs), float("nan")),
        }
        for name, param in ensemble.params().items():
            state[f"exp_avg.{name}"] = torch.zeros_like(param)
            state[f"exp_avg_sq.{name}"] = torch.zeros_like(param)
        for name, value in state.items():
            self.register_buffer(name.replace(".", "__"), value, persistent=False)
        self._sums: dict[str, Tensor] = {}
        self._segment_stop = 0
        self._step = self.batched_step
        self.test_confusion: Tensor | None = None

    def moments(self, which: str) -> list[Tensor]:
        """The optimizer's `exp_avg` or `exp_avg_sq` tensors, in parameter order."""
        return [getattr(self, f"{which}__{n}".replace(".", "__")) for n in self.ensemble.params()]

    def on_fit_start(self) -> None:
        if should_compile(self.compile, self.device):
            self._step = compiled(self.batched_step, self.compile_mode)

    def augment(self, x: Tensor, counters: Tensor) -> Tensor:
        """Flip and crop every member's batch x (M, B, C, H, W), keyed by member and step."""
        m, b = x.shape[:2]
        keys = self.ensemble.keys
        if self.random_flip:
            flip = keyed_uniform(keys, counters, FLIP_STREAM, (b,)) < 0.5
            x = hflip_where(x.flatten(0, 1), flip.flatten()).view_as(x)
        if self.crop_padding:
            u = keyed_uniform(keys, counters, CROP_STREAM, (2, b))
            offsets = (u * (2 * self.crop_padding + 1)).long().transpose(0, 1).reshape(2, m * b)
            x = crop_at(x.flatten(0, 1), self.crop_padding, offsets).view_as(x)
        return x

    def member_losses(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        labels: Tensor,
        counters: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """(sum of the active members' losses, every member's loss (M,)): label-smoothed CE."""
        logits = self.ensemble.logits(params, x, counters, buffers=buffers)
        losses = F.cross_entropy(
            logits.flatten(0, 1),
            labels.flatten(),
            reduction="none",
            label_smoothing=self.label_smoothing,
        ).view(labels.shape)
        losses = losses.mean(1)
        return torch.where(self.active, losses, 0.0).sum(), losses

    def member_batches(self) -> tuple[Tensor, Tensor]:
        """Every member's next training batch: images (M, B, C, H, W) in [-1, 1], flipped and
        cropped, and labels (M, B)."""
        b = self.schedule.batch_size
        index = self.position[:, None] * b + torch.arange(b, device=self.device)
        # A masked member's position may run past its order: any index will do.
        index = index.clamp(max=self.order.shape[1] - 1)
        index = self.starts[:, None] + self.order.gather(1, index)
        return self.augment(to_signed_unit(self.images[index]), self.steps), self.labels[index]

    def batched_step(self) -> None:
        """One step of every active member, on the device."""
        x, labels = self.member_batches()
        before = self.ensemble.running_state()
        params, buffers = self.ensemble.params(), self.ensemble.stacked_buffers()
        grads, losses = grad(self.member_losses, has_aux=True)(
            params, buffers, x, labels, self.steps
        )
        self.ensemble.keep_running_where(self.active, before)
        rows = torch.arange(len(self.steps), device=self.device)
        column = self.steps.clamp(max=self.lr_table.shape[1] - 1)  # the member's own step
        kept = self.train_losses[rows, column]
        self.train_losses[rows, column] = torch.where(self.active, losses.float(), kept)
        # As the standalone run's optimizer step: outside the precision plugin's autocast.
        with torch.autocast(self.device.type, enabled=False):
            ensemble_adam_(
                list(params.values()),
                list(grads.values()),
                self.moments("exp_avg"),
                self.moments("exp_avg_sq"),
                self.steps,
                self.lr_table[rows, column],
                self.active,
                self.adam,
            )
        self.position += 1

    def start_segment(self, start: int) -> None:
        """Members starting an epoch get its order; the active mask and positions are set."""
        for m, epoch in self.schedule.epochs_starting(start):
            member = self.schedule.members[m]
            self.order[m, : member.size] = epoch_order(member.size, member.seed, epoch)
        self.active.copy_(torch.tensor(self.schedule.active(start)))
        self.position.copy_(torch.tensor(self.schedule.positions(start)))

    def training_step(self, batch: tuple[int, int], batch_idx: int) -> None:
        start, stop = (int(v) for v in batch)
        self.start_segment(start)
        for _ in range(stop - start):
            self._step()
        self._segment_stop = stop
        last = torch.where(self.active, self.train_losses[:, stop - 1], float("nan"))
        # Read back by the progress bar only (once a segment, not once a step).
        self.log(tags.TRAIN_LOSS, last.nanmean(), prog_bar=True, logger=False)

    def shared_logits(self, images: Tensor) -> Tensor:
        """Every member's float32 logits (M, N, K) of one uint8 batch (N, C, H, W)."""
        return self.ensemble(to_signed_unit(images), shared=True).float()

    def on_validation_epoch_start(self) -> None:
        zeros = torch.zeros(len(self.steps), device=self.device, dtype=torch.float64)
        self._sums = {"loss": zeros, "correct": zeros.clone(), "count": zeros.clone()}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.shared_logits(images)
        losses = F.cross_entropy(
            logits.transpose(1, 2), labels.expand(len(logits), -1), reduction="none"
        )
        self._sums["loss"] += losses.sum(1)
        self._sums["correct"] += (logits.argmax(-1) == labels).sum(1)
        self._sums["count"] += len(labels)

    def on_validation_epoch_end(self) -> None:
        """Keep the validation of the members whose epoch ended with this segment; log it."""
        ended = self.schedule.epochs_ending(self._segment_stop)
        if self.trainer.sanity_checking or not ended:
            return
        loss = self._sums["loss"] / self._sums["count"]
        acc = self._sums["correct"] / self._sums["count"]
        for m, epoch in ended:
            spe = self.schedule.steps_per_epoch(m)
            own_steps = slice(epoch * spe, (epoch + 1) * spe)
            self.train_epoch_loss[m, epoch] = self.train_losses[m, own_steps].mean()
            self.val_loss[m, epoch], self.val_acc[m, epoch] = loss[m], acc[m]
        self.log(tags.VAL_ACC, acc[[m for m, _ in ended]].mean(), prog_bar=True, logger=False)
        for (m, epoch), values in zip(ended, self.epoch_values(ended), strict=True):
            name = self.schedule.members[m].name
            metrics = {f"{key}/{name}": value for key, value in values.items()}
            for logger in self.loggers:
                logger.log_metrics(metrics, step=epoch + 1)

    def epoch_values(self, ended: list[tuple[int, int]]) -> list[dict[str, float]]:
        """For each (member, epoch): its epoch's mean training loss, validation loss and accuracy
        (one read back to the host for all of them)."""
        m, e = (torch.tensor(v, device=self.device) for v in zip(*ended, strict=True))
        table = torch.stack([self.train_epoch_loss[m, e], self.val_loss[m, e], self.val_acc[m, e]])
        keys = [tags.by_epoch(tag) for tag in (tags.TRAIN_LOSS, tags.VAL_LOSS, tags.VAL_ACC)]
        return [dict(zip(keys, column, strict=True)) for column in table.T.tolist()]

    def on_test_epoch_start(self) -> None:
        k = self.ensemble.num_classes
        cells = len(self.steps) * k * k
        self._sums = {"confusion": torch.zeros(cells, dtype=torch.int64, device=self.device)}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        predicted = self.shared_logits(images).argmax(-1)
        k = self.ensemble.num_classes
        members = torch.arange(len(predicted), device=self.device)[:, None]
        cells = (members * k + labels) * k + predicted
        # index_add_, not bincount: bincount reads the largest index back to the host.
        self._sums["confusion"].index_add_(0, cells.flatten(), torch.ones_like(cells.flatten()))

    def on_test_epoch_end(self) -> None:
        """Keep every member's confusion matrix (M, K, K): true class down, predicted across."""
        k = self.ensemble.num_classes
        confusion = self._sums["confusion"].view(-1, k, k).cpu()
        accuracy = confusion.diagonal(dim1=1, dim2=2).sum(1) / confusion.sum((1, 2))
        self.test_confusion = confusion
        for member, acc in zip(self.schedule.members, accuracy.tolist(), strict=True):
            for logger in self.loggers:
                logger.log_metrics({f"{tags.TEST_ACC}/{member.name}": acc}, self.schedule.epochs)

    def train_dataloader(self) -> DataLoader:
        """The segments of the schedule, one per training batch."""
        return DataLoader(self.schedule.segments, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: InMemoryImages) -> DataLoader:
        """Whole batches by tensor indexing, in a fixed order."""
        return DataLoader(dataset, batch_size=self.eval_batch_size, collate_fn=already_batched)

    def configure_optimizers(self) -> None:
        """None: `ensemble_adam_` updates the members inside the batched step."""
        warnings.filterwarnings("ignore", "`LightningModule.configure_optimizers` returned `None`")

    def results(self) -> dict[str, Any]:
        """Per member, on the host: losses per own step, per-epoch curves, test confusion."""
        out = {}
        for m, member in enumerate(self.schedule.members):
            total, confusion = self.schedule.total_steps(m), self.test_confusion[m]
            out[member.name] = {
                "train_losses": self.train_losses[m, :total].tolist(),
                "train_epoch_loss": self.train_epoch_loss[m].tolist(),
                "val_loss": self.val_loss[m].tolist(),
                "val_acc": self.val_acc[m].tolist(),
                "confusion": confusion,
            }
        return out
