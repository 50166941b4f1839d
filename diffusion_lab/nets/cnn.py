"""A small VGG-style convolutional image classifier, fast enough to train on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A 3x3 same-size convolution, batch norm and ReLU (the bias is BN's shift)."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class CNN(nn.Module):
    """Stages of [3x3 conv, BN, ReLU] x convs_per_stage, each halved by 2x2 max-pooling, then
    global average pooling, dropout and a linear layer.

    Args:
        in_shape: (C, H, W) of the input images; H and W must be divisible by 2 ** len(widths)
            so that every pooling halves the whole image.
        num_classes: number of output logits.
        widths: channels of each stage (one pooling per stage).
        convs_per_stage: convolutions in each stage.
        dropout: dropout probability before the linear layer.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in in_shape):
            raise ValueError(
                f"in_shape={list(in_shape)!r}: must be three positive integers C, H, W"
            )
        if not widths or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths
        ):
            raise ValueError(
                f"widths={list(widths)!r}: must be a non-empty list of positive integers"
            )
        if not isinstance(convs_per_stage, int) or convs_per_stage < 1:
            raise ValueError(f"convs_per_stage={convs_per_stage!r}: must be a positive integer")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r}: must lie in [0, 1)")
        channels, height, width = in_shape
        factor = 2 ** len(widths)
        if height % factor or width % factor:
            raise ValueError(
                f"in_shape={list(in_shape)!r}: H and W must be divisible by {factor} "
                f"(2 ** {len(widths)} stages); use fewer widths or another image size"
            )
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        features = channels
        for stage_width in widths:
            for _ in range(convs_per_stage):
                layers += _conv_bn_relu(features, stage_width)
                features = stage_width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(features, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (N, *in_shape) in [-1, 1] -> logits (N, num_classes)."""
        return self.head(self.features(x))
