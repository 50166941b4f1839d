"""Uint8 image tensors held in memory, and the whole-batch operations applied to them."""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from diffusion_lab.utils.errors import DataError

# Images per interpolation call: bounds the float32 working copy (2048 x 3 x 256 x 256 is 1.6 GB).
_RESIZE_CHUNK = 2048

_Batch = TypeVar("_Batch")


class InMemoryImages(Dataset[tuple[Tensor, Tensor]]):
    """Uint8 images (N, C, H, W) with int64 labels (N,), fetched a whole batch at a time."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or tuple(labels.shape) != (images.shape[0],):
            raise DataError(
                f"labels must be an int64 tensor ({images.shape[0]},), got {labels.dtype} "
                f"{tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        """Number of images."""
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """One (image, label) pair."""
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        """A whole batch by one tensor index; the DataLoader calls this instead of __getitem__."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.images.is_cuda:
            # From pinned memory the copy is asynchronous: a pageable one would wait for the GPU.
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        return self.images[index], self.labels[index]


def already_batched(batch: _Batch) -> _Batch:
    """Collate function for datasets whose __getitems__ already returns a batch."""
    return batch


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, H, W) to (N, C, size, size): bilinear, antialiased, rounded."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"resize_uint8 needs uint8 (N, C, H, W), got {images.dtype}")
    if tuple(images.shape[-2:]) == (size, size):
        return images
    n, c = images.shape[:2]
    out = torch.empty((n, c, size, size), dtype=torch.uint8, device=images.device)
    for start in range(0, n, _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()
        resized = F.interpolate(
            chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        # Clamp so float error at the ends can never wrap around in the uint8 cast.
        out[start : start + _RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_signed_unit(images: Tensor) -> Tensor:
    """Map uint8 pixels to float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return images.float().div_(127.5).sub_(1.0)


def from_signed_unit(x: Tensor) -> Tensor:
    """Map floats in [-1, 1] to uint8 pixels (clamped, rounded): the inverse of to_signed_unit."""
    return x.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each sample of a batch along the width with probability 0.5."""
    # Draw on the generator's device (a CPU generator cannot fill a CUDA tensor), then move.
    device = generator.device if generator is not None else x.device
    flip = torch.rand(x.shape[0], generator=generator, device=device) < 0.5
    return hflip_where(x, flip.to(x.device))


def hflip_where(x: Tensor, flip: Tensor) -> Tensor:
    """Flip the samples of x (N, ...) along the width where the bool flip (N,) is set."""
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def split_train_val(
    images: Tensor, labels: Tensor, val_size: int, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Split into disjoint (train, val) parts by a permutation drawn from `seed`."""
    n = images.shape[0]
    if not 0 <= val_size < n:
        raise DataError(
            f"data.val_size={val_size}: must be between 0 and {n - 1} "
            f"(the training split has {n} images)"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad a batch (N, C, H, W) by `padding` and cut each sample at its own random offset."""
    if padding == 0:
        return x
    device = generator.device if generator is not None else x.device
    offsets = torch.randint(0, 2 * padding + 1, (2, len(x)), generator=generator, device=device)
    return crop_at(x, padding, offsets.to(x.device))


def crop_at(x: Tensor, padding: int, offsets: Tensor) -> Tensor:
    """Zero-pad x (N, C, H, W) by `padding`; cut sample i at row offsets[0, i], column offsets[1, i]
    (each in [0, 2 * padding]) of its padded image."""
    n, _, h, w = x.shape
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)
    padded = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)
    # One gather over the whole batch: sample i takes rows[i] x cols[i] of its padded image.
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
