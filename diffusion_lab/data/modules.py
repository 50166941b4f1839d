"""LightningDataModules over in-memory uint8 images, scaled to [-1, 1] on the device."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from diffusion_lab.data.cifar10 import CIFAR10_CLASSES, ensure_cifar10, load_cifar10
from diffusion_lab.data.digits import DIGIT_CLASSES, load_digits_split
from diffusion_lab.data.tensors import (
    InMemoryImages,
    already_batched,
    random_crop,
    random_hflip,
    resize_uint8,
    split_train_val,
    to_signed_unit,
)
from diffusion_lab.utils.errors import DataError


def check_positive(key: str, value: int) -> None:
    """Refuse a config value that must be a positive integer."""
    if not isinstance(value, int) or value < 1:
        raise DataError(f"{key}={value}: must be a positive integer")


class EpochShuffle(DistributedSampler):
    """A permutation of range(n) drawn from (seed, epoch) alone, shared by `world_size`
    processes: process `rank` takes every `world_size`-th index of it from `rank` on (a
    remainder of fewer than `world_size` indices is left out). A resumed run draws it again.

    It is a DistributedSampler only so that Lightning uses it as it is: Lightning wraps any
    other sampler in one that shuffles again by its own seed, which a resume could not skip
    into. Lightning calls `set_epoch` at every epoch start. `resume_at` makes the next
    iteration start after the indices an interrupted epoch already used, by all processes;
    those follow at the end, and the trainer, which counts the epoch's batches, ends the
    epoch before reaching them.
    """

    def __init__(self, n: int, seed: int, world_size: int = 1, rank: int = 0) -> None:
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.n = n
        self._skip = 0

    def resume_at(self, epoch: int, skip: int) -> None:
        """Start the next iteration at index `skip` of epoch `epoch`'s order (rotated)."""
        self.epoch, self._skip = epoch, skip

    def __len__(self) -> int:
        return self.n // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))
        skip, self._skip = self._skip, 0
        order = torch.cat([order[skip:], order[:skip]])
        return iter(order[self.rank : len(self) * self.num_replicas : self.num_replicas].tolist())


class BatchedDataModule(pl.LightningDataModule):
    """Serves in-memory uint8 splits as whole batches, scaled to [-1, 1] on the device.

    Subclasses fill `train_set`, `val_set` and `test_set` in `setup`. Training batches are
    flipped (with `random_flip`) and randomly cropped (with `crop_padding` > 0) on the device.
    The training order is an EpochShuffle seeded with torch's initial seed (the run's `seed`
    after `seed_everything`), shared out to the processes of a distributed run; where it
    stands goes into every checkpoint (`state_dict`), so a run resumed mid-epoch trains on the
    batches the interrupted one had not reached yet.
    """

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int,
        random_flip: bool = False,
        crop_padding: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.random_flip = random_flip
        self.crop_padding = crop_padding
        self.num_workers = num_workers
        self.train_set: InMemoryImages | None = None
        self.val_set: InMemoryImages | None = None
        self.test_set: InMemoryImages | None = None
        # (epoch, images of it already trained on) from a checkpoint, for the next train loader.
        self._resume_at: tuple[int, int] | None = None

    def _loader(
        self, dataset: InMemoryImages | None, batch_size: int, sampler: Sampler[int] | None = None
    ) -> DataLoader:
        """A DataLoader that fetches whole batches by tensor indexing (no per-sample work)."""
        if dataset is None:
            raise RuntimeError("call setup() for this stage before asking for its dataloader")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            collate_fn=already_batched,
            num_workers=self.num_workers,
            pin_memory=False,
            persistent_workers=self.num_workers > 0,
            # Each iterator draws its workers' base seed from this generator: drawn from the
            # global one, it would shift the training noise that a resume must reproduce.
            generator=torch.Generator().manual_seed(0),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the last partial batch is dropped."""
        if self.train_set is None:
            raise RuntimeError("call setup('fit') before asking for the training dataloader")
        trainer = self.trainer
        processes = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        shuffle = EpochShuffle(len(self.train_set), torch.initial_seed(), *processes)
        if self._resume_at is not None:
            epoch, images_done = self._resume_at
            shuffle.resume_at(epoch, images_done)
            self._resume_at = None
        return self._loader(self.train_set, self.batch_size, shuffle)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Held-out test batches in a fixed order."""
        return self._loader(self.test_set, self.eval_batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Where the training order stands: the epoch and how many of its batches were trained."""
        if self.trainer is None:
            return {}
        return {
            "epoch": self.trainer.current_epoch,
            "batches_done": self.trainer.fit_loop.epoch_loop.batch_progress.current.processed,
            "batches_per_epoch": self.trainer.num_training_batches,
            "world_size": self.trainer.world_size,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the training order where the checkpoint left it (the next epoch, if done).

        The images already used are counted with the saved run's number of processes (every
        process trains on its own batch of each step), so a resume with another number goes on
        with the images the saved run had not reached.
        """
        if not state_dict:
            return
        epoch, done = state_dict["epoch"], state_dict["batches_done"]
        finished = done >= state_dict["batches_per_epoch"]
        images_done = done * self.batch_size * state_dict["world_size"]
        self._resume_at = (epoch + 1, 0) if finished else (epoch, images_done)
        # Lightning looks for the position on the loader only; here the datamodule carries it.
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Scale uint8 to [-1, 1] on the device; in training, flip and crop where configured."""
        images, labels = batch
        x = to_signed_unit(images)
        if self.trainer is not None and self.trainer.training:
            if self.random_flip:
                x = random_hflip(x)
            x = random_crop(x, self.crop_padding)
        return x, labels


class ImageDataModule(BatchedDataModule):
    """Base for uint8 datasets held in memory: subclasses implement `_load`, set `class_names`."""

    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        batch_size: int,
        img_size: int,
        channels: int,
        num_classes: int,
        val_size: int,
        split_seed: int = 0,
        random_flip: bool = False,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_device: bool = False,
    ) -> None:
        super().__init__(
            batch_size, eval_batch_size or batch_size, random_flip, num_workers=num_workers
        )
        for key, value in (("batch_size", batch_size), ("img_size", img_size)):
            check_positive(f"data.{key}", value)
        if eval_batch_size is not None:
            check_positive("data.eval_batch_size", eval_batch_size)
        if num_workers < 0:
            raise DataError(f"data.num_workers={num_workers}: must be 0 or more")
        if on_device and num_workers:
            raise DataError(
                f"data.num_workers={num_workers}: must be 0 with data.on_device=true "
                "(worker processes cannot index GPU memory)"
            )
        self.img_size = img_size
        self.channels = channels
        self.num_classes = num_classes
        self.val_size = val_size
        self.split_seed = split_seed
        self.on_device = on_device

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """The train or test split as uint8 (N, C, H, W) images and int64 labels."""
        raise NotImplementedError

    def _load_checked(self, train: bool) -> tuple[Tensor, Tensor]:
        """Load a split, check it against the declared config and resize it to img_size."""
        images, labels = self._load(train)
        if images.shape[1] != self.channels:
            raise DataError(
                f"data.channels={self.channels} but the data has {images.shape[1]} channel(s)"
            )
        if len(labels) == 0:
            raise DataError(
                f"{type(self).__name__}: the {'train' if train else 'test'} split is empty"
            )
        for found in (int(labels.max()) + 1, len(self.class_names)):
            if found != self.num_classes:
                raise DataError(
                    f"data.num_classes={self.num_classes} but the data has {found} classes"
                )
        return resize_uint8(images, self.img_size), labels

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """A whole split in its own order (train: before the validation carve), checked and
        resized: the reference images of `evaluate`."""
        return self._load_checked(train)

    def setup(self, stage: str) -> None:
        """Build the train/val sets (fit, validate) or the held-out test set (test) once."""
        if stage in ("fit", "validate") and self.train_set is None:
            images, labels = self._load_checked(train=True)
            train, val = split_train_val(images, labels, self.val_size, self.split_seed)
            if len(train[0]) < self.batch_size:
                raise DataError(
                    f"data.batch_size={self.batch_size}: larger than the {len(train[0])} "
                    f"training images left after data.val_size={self.val_size}"
                )
            self.train_set, self.val_set = InMemoryImages(*train), InMemoryImages(*val)
        if stage in ("fit", "validate"):
            # Also on the trainer's own call when the data were set up before it existed.
            self._move_to_gpu(self.train_set, self.val_set)
        if stage == "test" and self.test_set is None:
            self.test_set = InMemoryImages(*self._load_checked(train=False))

    def _move_to_gpu(self, *datasets: InMemoryImages) -> None:
        """With `on_device`, hold the uint8 images on the trainer's GPU: batches are then cut
        out by indexing there, with no host-to-device copy per step."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if not self.on_device or device is None or device.type != "cuda":
            return
        for dataset in datasets:
            dataset.images, dataset.labels = dataset.images.to(device), dataset.labels.to(device)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 from the official batch files under `root`, downloaded when missing and allowed."""

    class_names = CIFAR10_CLASSES

    def __init__(
        self, root: str, download: bool = True, verify_checksums: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = download
        self.verify_checksums = verify_checksums

    def prepare_data(self) -> None:
        """Find or download the batch files (Lightning runs this on one process per node)."""
        ensure_cifar10(self.root, self.download)

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """The CIFAR-10 train or test split."""
        return load_cifar10(self.root, train, self.download, self.verify_checksums)


class DigitsDataModule(ImageDataModule):
    """scikit-learn's embedded 8x8 digits, resized to img_size: the no-download default."""

    class_names = DIGIT_CLASSES

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """The fixed digits train (1,500) or test (297) split."""
        return load_digits_split(train)
