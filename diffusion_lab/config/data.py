"""What a config's data node leaves to be found out from the data itself."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig

from diffusion_lab.data.image_folder import NO_ROOT, ImageFolderDataModule, classes_of
from diffusion_lab.utils.errors import DataError


def infer_num_classes(data: DictConfig) -> None:
    """`data.num_classes=null` with `data=image_folder` becomes the number of class folders
    under `data.root` (as torchvision's ImageFolder counts them), before anything that the
    count sizes is built; any other data config is left as it is."""
    if data.get("num_classes") is not None or "_target_" not in data:
        return
    if not issubclass(get_class(data._target_), ImageFolderDataModule):
        return
    if data.root is None:
        raise DataError(NO_ROOT)
    data.num_classes = len(classes_of(Path(data.root).expanduser()))
