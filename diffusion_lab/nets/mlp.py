"""A multilayer perceptron classifier for images, with a fixed input whitening step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

NORMS = ("none", "batch", "layer")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
WHITENINGS = ("none", "standardize", "zca")


def _norm(kind: str, width: int) -> nn.Module:
    """The normalisation layer after a hidden linear layer."""
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


class MLP(nn.Module):
    """Flatten, whiten, then [linear, norm, activation, dropout] per hidden width, then linear.

    Args:
        in_shape: (C, H, W) of the input images (or a single int: features per sample).
        num_classes: number of output logits.
        widths: hidden layer widths; empty gives a linear classifier.
        norm: `none`, `batch` or `layer` normalisation after each hidden linear layer.
        dropout: dropout probability after each hidden activation.
        activation: `relu`, `gelu` or `silu`.
        whitening: fixed (non-trainable) input transform fitted by `fit_whitening` on training
            images: `standardize` (per-channel mean and std), `zca` (ZCA whitening of the
            flattened pixels, Bell & Sejnowski 1997), or `none`.
        zca_eps: added to the covariance eigenvalues before the inverse square root.
    """

    def __init__(
        self,
        in_shape: Sequence[int] | int,
        num_classes: int,
        widths: Sequence[int] = (512, 512),
        norm: str = "none",
        dropout: float = 0.0,
        activation: str = "relu",
        whitening: str = "standardize",
        zca_eps: float = 0.1,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}: must be one of {', '.join(NORMS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: must be one of {', '.join(ACTIVATIONS)}")
        if whitening not in WHITENINGS:
            raise ValueError(f"whitening={whitening!r}: must be one of {', '.join(WHITENINGS)}")
        if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            raise ValueError(f"widths={list(widths)!r}: must be positive integers")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r}: must lie in [0, 1)")
        self.in_shape = (in_shape,) if isinstance(in_shape, int) else tuple(in_shape)
        self.in_features = int(torch.tensor(self.in_shape).prod())
        self.num_classes = num_classes
        self.whitening = whitening
        self.zca_eps = zca_eps
        # Identity until fit_whitening runs; buffers travel with the state_dict and the device.
        self.register_buffer("mean", torch.zeros(self.in_features))
        self.register_buffer("scale", torch.ones(self.in_features))
        if whitening == "zca":
            self.register_buffer("zca", torch.eye(self.in_features))
        layers: list[nn.Module] = []
        features = self.in_features
        for width in widths:
            layers += [nn.Linear(features, width), _norm(norm, width), ACTIVATIONS[activation]()]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    @torch.no_grad()
    def fit_whitening(self, x: Tensor) -> None:
        """Fit the input transform on float training images x (N, *in_shape), as fed to forward."""
        if self.whitening == "none":
            return
        if self.whitening == "standardize":
            # One mean and std per channel (the leading dim of in_shape), spread over its pixels.
            per_channel = x.reshape(len(x), self.in_shape[0], -1).double().transpose(0, 1)
            channels = per_channel.reshape(self.in_shape[0], -1)
            mean, std = channels.mean(1), channels.std(1).clamp_min(1e-8)
            self.mean.copy_(mean.repeat_interleave(self.in_features // self.in_shape[0]))
            self.scale.copy_((1.0 / std).repeat_interleave(self.in_features // self.in_shape[0]))
            return
        flat = x.reshape(len(x), -1).double()
        mean = flat.mean(0)
        flat -= mean
        covariance = flat.T @ flat / (len(flat) - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        # W = U diag(1 / sqrt(lambda + eps)) U^T: decorrelates the pixels, stays close to the
        # image basis; eps keeps the noise directions (tiny lambda) from being blown up.
        inv_sqrt = (eigenvalues.clamp_min(0) + self.zca_eps).rsqrt()
        self.zca.copy_((eigenvectors * inv_sqrt) @ eigenvectors.T)
        self.mean.copy_(mean)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, *in_shape) -> logits (N, num_classes)."""
        h = x.reshape(len(x), -1)
        h = (h - self.mean) * self.scale
        if self.whitening == "zca":
            h = h @ self.zca
        return self.layers(h)
