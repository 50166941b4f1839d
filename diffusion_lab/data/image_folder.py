"""A user's own images: `root/<class>/<image>` folders, decoded once into memory.

Layouts:
- `root/train/<class>/...` and `root/test/<class>/...`: the two folders are the splits (they
  must hold the same class folders);
- `root/<class>/...`: a fixed per-class hold-out of `test_fraction` of the images (drawn with
  `test_seed` over the sorted file names) is the test split, the rest the training split.
Class names are the sorted folder names, so label k is the k-th name. See `image_files` for
which files count as images and how they are converted, cropped and resized.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from torch import Tensor

from diffusion_lab.data.image_files import (
    DEFAULT_THREADS,
    ClassFiles,
    class_folder_names,
    decode_files,
    flatten,
    hold_out,
    scan_classes,
)
from diffusion_lab.data.modules import ImageDataModule, check_positive
from diffusion_lab.utils.errors import DataError

SPLIT_FOLDERS = ("train", "test")
NO_ROOT = "data.root=None: pass the folder that holds one sub-folder of images per class"


def _shown(names: list[str], limit: int = 5) -> str:
    """Up to `limit` names for an error message."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def has_split_folders(root: Path) -> bool:
    """True when `root` holds both `train/` and `test/` folders."""
    return all((root / name).is_dir() for name in SPLIT_FOLDERS)


def classes_of(root: Path) -> list[str]:
    """The class names under `root` (in either layout), checked to be at least two."""
    if not has_split_folders(root):
        names = class_folder_names(root)
    else:
        names, test_names = (class_folder_names(root / split) for split in SPLIT_FOLDERS)
        if names != test_names:
            only_train = sorted(set(names) - set(test_names))
            only_test = sorted(set(test_names) - set(names))
            raise DataError(
                f"data.root={root}: train/ and test/ hold different class folders "
                f"(only in train/: {_shown(only_train) or '-'}; "
                f"only in test/: {_shown(only_test) or '-'})"
            )
    if len(names) < 2:
        raise DataError(
            f"data.root={root}: found {len(names)} class folder(s) ({_shown(names) or '-'}); "
            "need at least 2, one sub-folder of images per class"
        )
    return names


class ImageFolderDataModule(ImageDataModule):
    """Images from `root/<class>/` folders (PNG, JPEG), decoded once into uint8 tensors.

    Args:
        root: the folder of class folders, or of `train/` and `test/` folders of class folders.
        test_fraction: without `train/` and `test/`, this fraction of every class is held out
            as the test split (at least one image per class when > 0).
        test_seed: seed of that hold-out.
        decode_threads: threads decoding files (None: min(8, CPU count)).
        **kwargs: ImageDataModule's; `num_classes` must equal the number of class folders
            (`config.data.infer_num_classes` sets it from them in a config that leaves it null).
    """

    def __init__(
        self,
        root: str | None,
        test_fraction: float = 0.1,
        test_seed: int = 0,
        decode_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if root is None:
            raise DataError(NO_ROOT)
        if not 0 <= test_fraction < 1:
            raise DataError(f"data.test_fraction={test_fraction}: must lie in [0, 1)")
        if decode_threads is not None:
            check_positive("data.decode_threads", decode_threads)
        self.root = Path(root).expanduser()
        self.test_fraction = test_fraction
        self.test_seed = test_seed
        self.decode_threads = decode_threads or DEFAULT_THREADS
        # Class names are needed before setup (the classifier's datamodule copies them).
        self.class_names = tuple(classes_of(self.root))
        self._check_num_classes()

    def _check_num_classes(self) -> None:
        """The config's class count builds the network: it must match the folders."""
        found = len(self.class_names)
        if self.num_classes != found:
            raise DataError(
                f"data.num_classes={self.num_classes} but data.root={self.root} holds {found} "
                f"class folders ({_shown(list(self.class_names))}); pass data.num_classes={found} "
                "or leave it null (counted from the folders)"
            )

    @cached_property
    def _splits(self) -> tuple[ClassFiles, ClassFiles]:
        """The (train, test) files of every class, listed once."""
        if has_split_folders(self.root):
            return scan_classes(self.root / "train"), scan_classes(self.root / "test")
        files = scan_classes(self.root)
        return hold_out(files, self.test_fraction, self.test_seed, self.root)

    def prepare_data(self) -> None:
        """List every class's files now, so an empty class fails before anything is written."""
        _ = self._splits

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        """Decode the train or test split's files (already at img_size)."""
        paths, labels = flatten(self._splits[0 if train else 1])
        if not paths:
            raise DataError(
                f"data.root={self.root}: the test split is empty (data.test_fraction=0); "
                "hold out a fraction or add test/ and train/ folders"
            )
        images = decode_files(paths, self.channels, self.img_size, self.decode_threads)
        return images, labels
