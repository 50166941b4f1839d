"""The reference classifier of label fidelity: a `classify` checkpoint, loaded for inference.

`python -m diffusion_lab.classify experiment=reference_classifier` writes `reference.ckpt`
beside its `metrics.json`, whose real test accuracy is the ceiling that label fidelity on
generated images is read against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from torch import Tensor, nn

from diffusion_lab.lit.classifier import ClassifierModule
from diffusion_lab.runs.checkpoints import RUN_CONFIG_KEY, load_weights
from diffusion_lab.runs.data_spec import DataSpec
from diffusion_lab.utils.errors import UserFacingError

# The autocast dtype of each Lightning mixed precision (the others run the network as stored).
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class ReferenceClassifier:
    """A trained image classifier with what its images must look like.

    `net` is in eval mode and maps float images in [-1, 1], (N, channels, img_size, img_size),
    to logits. `autocast_dtype` is the autocast its run was tested under (None: full precision),
    so that generated images are classified as the real test images of `test_accuracy` were.
    """

    net: nn.Module
    class_names: tuple[str, ...]
    img_size: int
    channels: int
    test_accuracy: float | None
    autocast_dtype: torch.dtype | None
    path: Path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_images(self, images: Tensor, source: str) -> None:
        """Refuse images (N, C, H, W) from `source` of a size or channel count it does not take."""
        shape = tuple(images.shape[1:])
        if images.dim() != 4 or shape != (self.channels, self.img_size, self.img_size):
            raise UserFacingError(
                f"reference classifier {self.path} takes {self.channels}x{self.img_size}x"
                f"{self.img_size} images; {source} has {'x'.join(map(str, shape))} images"
            )


def _read_checkpoint(path: Path, key: str) -> dict:
    """The checkpoint dict, or a one-line error for a missing or foreign file."""
    if not path.is_file():
        raise UserFacingError(f"{key}={path}: no such classifier checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load raises many types (unpickling, zip, EOF) for a foreign file
        raise UserFacingError(f"{key}={path}: not a PyTorch checkpoint file") from None
    config = checkpoint.get(RUN_CONFIG_KEY) if isinstance(checkpoint, dict) else None
    module = config.get("module") if isinstance(config, dict) else None
    target = module.get("_target_") if isinstance(module, dict) else None
    try:
        module_class = get_class(target) if isinstance(target, str) else None
    except ImportError:
        module_class = None
    if not (isinstance(module_class, type) and issubclass(module_class, ClassifierModule)):
        what = "no stored run config" if target is None else f"its module is {target}"
        raise UserFacingError(
            f"{key}={path}: not a `classify` checkpoint ({what}); train one with "
            "`python -m diffusion_lab.classify experiment=reference_classifier`"
        )
    return checkpoint


def _load_net(checkpoint: dict, path: Path, key: str) -> nn.Module:
    """The checkpoint's classifier network with its weights, in eval mode and without grads."""
    try:
        module = instantiate(checkpoint[RUN_CONFIG_KEY]["module"])
    except Exception as err:  # a config from another version of the code
        raise UserFacingError(
            f"{key}={path}: its stored config no longer builds a classifier "
            f"({type(err).__name__}); a checkpoint from an incompatible version"
        ) from None
    load_weights(module, checkpoint, key, path, "its stored config")
    return module.net.eval().requires_grad_(False)


def recorded_test_accuracy(path: Path, key: str) -> float | None:
    """`test/acc` of the metrics.json beside the checkpoint (None when there is none)."""
    metrics_path = path.parent / "metrics.json"
    if not metrics_path.is_file():
        return None
    try:
        accuracy = json.loads(metrics_path.read_text()).get("test/acc")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserFacingError(
            f"{key}={path}: the metrics.json beside it is not a JSON object of metrics"
        ) from None
    return float(accuracy) if isinstance(accuracy, (int, float)) else None


def load_reference_classifier(path: str | Path, key: str = "reference") -> ReferenceClassifier:
    """The classifier of a `classify` checkpoint on the CPU; `key` names the setting in errors."""
    path = Path(path)
    checkpoint = _read_checkpoint(path, key)
    net = _load_net(checkpoint, path, key)
    config = checkpoint[RUN_CONFIG_KEY]
    spec = DataSpec.of_run_config(config, str(path))
    names = spec.class_names or tuple(str(c) for c in range(spec.num_classes))
    precision = str(config.get("trainer", {}).get("precision"))
    return ReferenceClassifier(
        net=net,
        class_names=names,
        img_size=spec.img_size,
        channels=spec.channels,
        test_accuracy=recorded_test_accuracy(path, key),
        autocast_dtype=AUTOCAST_DTYPES.get(precision),
        path=path,
    )
