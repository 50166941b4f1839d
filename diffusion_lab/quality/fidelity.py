"""Label fidelity: how often a reference classifier gives images the class they were made for."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _as_signed_unit(images: Tensor) -> Tensor:
    """uint8 pixels to float in [-1, 1]; float images are taken to be in [-1, 1] already."""
    if images.dtype != torch.uint8:
        return images.float()
    # The operations of diffusion_lab.data.tensors.to_signed_unit (the classifier's training
    # input), bit for bit, without importing the data layer into this pure-torch package.
    return images.float().div_(127.5).sub_(1.0)


def _check_inputs(images: Tensor, labels: Tensor, num_classes: int, batch_size: int) -> None:
    if len(labels) == 0:
        raise ValueError("label fidelity needs at least one image")
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be ({len(images)},), got shape {tuple(labels.shape)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be a positive integer")


@torch.no_grad()
def predict(
    net: nn.Module, images: Tensor, batch_size: int, autocast_dtype: torch.dtype | None = None
) -> Tensor:
    """The class `net` (in eval mode) predicts for each image, batch by batch, on the net's device.

    `images` are uint8 pixels (as stored; converted a batch at a time, which keeps a 50,000-image
    set small) or floats in [-1, 1]. `autocast_dtype` runs the forward under that autocast.
    """
    device = next(net.parameters()).device
    predictions = []
    for start in range(0, len(images), batch_size):
        x = _as_signed_unit(images[start : start + batch_size].to(device))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            predictions.append(net(x).argmax(1).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def label_fidelity(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    batch_size: int = 500,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, Tensor]:
    """The accuracy of `net` on images made for `labels`: overall, and per class (num_classes,).

    A class without images gets NaN. See `predict` for the image format and `autocast_dtype`.
    """
    _check_inputs(images, labels, num_classes, batch_size)
    labels = labels.long().cpu()
    correct = (predict(net, images, batch_size, autocast_dtype) == labels).double()
    # Counted here, not with torchmetrics' MulticlassAccuracy: this layer imports torch only,
    # and a class without images must read NaN (unmeasured), where torchmetrics gives 0.
    per_class_correct = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    per_class_count = torch.bincount(labels, minlength=num_classes).double()
    per_class = per_class_correct / per_class_count  # 0 / 0 is NaN: a class with no images
    return float(correct.mean()), per_class
