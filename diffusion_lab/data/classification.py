"""Classifier data: real images, generated images or both, as in-memory uint8 tensors.

Modes (the training set; validation and test always use the real data's splits):
- `real`: the real training split (optionally `real_per_class` images of each class);
- `augmented`: the real training images plus the generated set;
- `synthetic`: the generated set alone, so test accuracy on real images is the
  Classification Accuracy Score of Ravuri & Vinyals (2019).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from diffusion_lab.data.generated import GeneratedSet, check_matches, read_generated_set
from diffusion_lab.data.modules import BatchedDataModule, ImageDataModule
from diffusion_lab.data.tensors import InMemoryImages
from diffusion_lab.utils.errors import DataError

MODES = ("real", "augmented", "synthetic")


def first_per_class(labels: Tensor, per_class: int, num_classes: int, what: str) -> Tensor:
    """Indices of the first `per_class` images of every class (in the given order)."""
    picked = []
    for c in range(num_classes):
        of_class = torch.nonzero(labels == c).flatten()
        if len(of_class) < per_class:
            raise DataError(f"{what}: class {c} has {len(of_class)} images, fewer than {per_class}")
        picked.append(of_class[:per_class])
    return torch.cat(picked)


class ClassificationDataModule(BatchedDataModule):
    """Train/val/test batches for a classifier, augmented on the device one batch at a time.

    Args:
        real: the real data (its train/val/test splits, image size, channels, class names and
            `random_flip`); only its `prepare_data` and `setup` are used.
        mode: `real`, `augmented` or `synthetic` (see the module docstring).
        synthetic: folder of a generated set; required by `augmented` and `synthetic`.
        generated_per_class: use the first this many generated images of each class (None: all).
        real_per_class: keep this many real training images of each class, drawn once with
            `subset_seed` (None: all); the low-data regime.
        batch_size, eval_batch_size: training and evaluation batch sizes.
        crop_padding: random crops after zero-padding by this many pixels (0: none).
    """

    def __init__(
        self,
        real: ImageDataModule,
        mode: str = "real",
        synthetic: str | None = None,
        generated_per_class: int | None = None,
        real_per_class: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 500,
        crop_padding: int = 0,
        subset_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, real.random_flip, crop_padding)
        if mode not in MODES:
            raise DataError(f"mode={mode!r}: must be one of {', '.join(MODES)}")
        if mode != "real" and synthetic is None:
            raise DataError(f"mode={mode}: needs synthetic=PATH (a folder made by generate)")
        self.real = real
        self.mode = mode
        self.synthetic = synthetic
        self.generated_per_class = generated_per_class
        self.real_per_class = real_per_class
        self.subset_seed = subset_seed
        self.class_names = real.class_names
        self.img_size, self.channels = real.img_size, real.channels
        self.num_classes = real.num_classes
        self.n_real = self.n_generated = 0
        self._generated: GeneratedSet | None = None

    def prepare_data(self) -> None:
        """Find the real data and read and check the generated set: bad input fails here."""
        self.real.prepare_data()
        self.generated()

    def generated(self) -> GeneratedSet | None:
        """The generated set (read once, checked against the real data), None in mode `real`."""
        if self.mode == "real":
            return None
        if self._generated is None:
            gen = read_generated_set(Path(self.synthetic))
            check_matches(
                gen, img_size=self.img_size, channels=self.channels, num_classes=self.num_classes
            )
            self._generated = gen
        return self._generated

    def real_train(self) -> tuple[Tensor, Tensor]:
        """The real training images of this run: all, or a fixed subset per class."""
        images, labels = self.real.train_set.images, self.real.train_set.labels
        if self.real_per_class is None:
            return images, labels
        order = torch.randperm(
            len(labels), generator=torch.Generator().manual_seed(self.subset_seed)
        )
        what = f"real_per_class={self.real_per_class}"
        keep = order[first_per_class(labels[order], self.real_per_class, self.num_classes, what)]
        return images[keep], labels[keep]

    def generated_train(self) -> tuple[Tensor, Tensor]:
        """The generated images of this run: all, or the first generated_per_class of each class."""
        gen = self.generated()
        if self.generated_per_class is None:
            return gen.images, gen.labels
        what = f"generated set {self.synthetic} with generated_per_class={self.generated_per_class}"
        keep = first_per_class(gen.labels, self.generated_per_class, self.num_classes, what)
        return gen.images[keep], gen.labels[keep]

    def setup(self, stage: str) -> None:
        """Build the training set of the mode and the real validation set, or the real test set."""
        if stage in ("fit", "validate") and self.train_set is None:
            self.real.setup("fit")
            real = self.real_train() if self.mode != "synthetic" else None
            generated = self.generated_train() if self.mode != "real" else None
            self.n_real = len(real[1]) if real is not None else 0
            self.n_generated = len(generated[1]) if generated is not None else 0
            parts = [part for part in (real, generated) if part is not None]
            images, labels = (torch.cat(tensors) for tensors in zip(*parts, strict=True))
            if len(labels) < self.batch_size:
                raise DataError(
                    f"batch_size={self.batch_size}: larger than the {len(labels)} training images"
                )
            self.train_set, self.val_set = InMemoryImages(images, labels), self.real.val_set
        if stage == "test" and self.test_set is None:
            self.real.setup("test")
            self.test_set = self.real.test_set
