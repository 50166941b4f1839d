"""The 8x8 handwritten digits embedded in scikit-learn: real data that needs no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from diffusion_lab.utils.errors import DataError

DIGIT_CLASSES = tuple(str(i) for i in range(10))

_MAX_VALUE = 16  # the embedded images count ink in 4x4 blocks: values 0..16


def load_digits_split(train: bool, test_size: int = 297, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed stratified split of the digits: uint8 (N, 1, 8, 8) in 0..255, int64 labels."""
    digits = load_digits()
    n, n_classes = len(digits.target), len(DIGIT_CLASSES)
    # Stratification needs at least one image of each class on both sides.
    if not n_classes <= test_size <= n - n_classes:
        raise DataError(
            f"digits test_size={test_size}: must be between {n_classes} and {n - n_classes}"
        )
    images = np.rint(digits.images * 255 / _MAX_VALUE).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=test_size, stratify=labels, random_state=seed
    )
    idx = train_idx if train else test_idx
    return torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])
