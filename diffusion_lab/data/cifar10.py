"""CIFAR-10 from the official python batch files (`cifar-10-batches-py` layout)."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Mapping
from http.client import HTTPException
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets.utils import download_and_extract_archive

from diffusion_lab.data.checksum_cache import cached_md5s
from diffusion_lab.errors import DataError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
# md5 of each batch file in the official archive, as its publishers and torchvision list them.
OFFICIAL_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

_BATCH_FOLDER = "cifar-10-batches-py"
_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILES = ("test_batch",)
_REQUIRED_FILES = (*_TRAIN_FILES, *_TEST_FILES, "batches.meta")
_IMAGE_SHAPE = (3, 32, 32)
_PIXELS = 3 * 32 * 32


def find_batch_dir(root: Path) -> Path | None:
    """The folder holding the batch files: `root` itself or `root/cifar-10-batches-py`."""
    for folder in (root, root / _BATCH_FOLDER):
        if all((folder / name).is_file() for name in _REQUIRED_FILES):
            return folder
    return None


def _malformed(path: Path, reason: str) -> DataError:
    """A one-line DataError naming the batch file that cannot be used."""
    first_line = reason.strip().splitlines()[0] if reason.strip() else "unreadable"
    return DataError(f"{path}: not a valid CIFAR-10 batch file ({first_line})")


def _unpickle(path: Path) -> dict:
    """Load one batch pickle the way the CIFAR site does (byte-string keys)."""
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="bytes")
    # A truncated or foreign pickle can fail with almost any exception type.
    except Exception as err:
        raise _malformed(path, f"{type(err).__name__}: {err}") from err
    if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
        raise _malformed(path, "expected a dict with keys b'data' and b'labels'")
    return entry


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (uint8 rows of 3072 pixels, int64 labels), checked."""
    entry = _unpickle(path)
    data, raw_labels = entry[b"data"], entry[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise _malformed(path, "b'data' must be a uint8 array (N, 3072)")
    if data.shape[1] != _PIXELS:
        raise _malformed(path, f"b'data' has {data.shape[1]} values per image, not {_PIXELS}")
    try:
        labels = np.asarray(raw_labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise _malformed(path, f"b'labels' are not integers: {err}") from err
    if labels.shape != (data.shape[0],):
        raise _malformed(path, f"{labels.size} labels for {data.shape[0]} images")
    if labels.size and not 0 <= labels.min() <= labels.max() < len(CIFAR10_CLASSES):
        raise _malformed(path, f"labels must lie in 0..{len(CIFAR10_CLASSES) - 1}")
    return data, labels


def verify_checksums(paths: list[Path], expected: Mapping[str, str]) -> None:
    """DataError naming the first file whose md5 is not `expected[file name]`.

    Sums come from the user's checksum cache while a file keeps its path, size and mtime, so
    the 180 MB are hashed once.
    """
    for path, digest in zip(paths, cached_md5s(paths), strict=True):
        if digest != expected[path.name]:
            raise DataError(
                f"{path}: md5 {digest} is not the official CIFAR-10 {path.name}'s "
                f"{expected[path.name]} (corrupt or re-packed): download it again, or set "
                f"data.verify_checksums=false for a copy whose bytes legitimately differ"
            )


def read_cifar10_split(
    batch_dir: Path, train: bool, checksums: Mapping[str, str] | None = OFFICIAL_MD5
) -> tuple[Tensor, Tensor]:
    """Read the train (data_batch_1..5) or test split: uint8 (N, 3, 32, 32), int64 (N,).

    The files are checked against `checksums` (file name -> md5) first; None skips that.
    """
    paths = [batch_dir / name for name in (_TRAIN_FILES if train else _TEST_FILES)]
    if checksums is not None:
        verify_checksums(paths, checksums)
    batches = [_read_batch(path) for path in paths]
    # Rows are channel-planar (1024 red, 1024 green, 1024 blue), so a reshape gives (C, H, W).
    data = np.concatenate([rows for rows, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(data).reshape(-1, *_IMAGE_SHAPE), torch.from_numpy(labels)


def _topmost_missing(path: Path) -> Path | None:
    """The highest of `path` and its parents that does not exist yet, if any."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _try_download(root: Path) -> str | None:
    """Download and extract the official archive into `root`; the failure reason, if any.

    A failed attempt removes the folders it created, so an offline run leaves nothing behind.
    """
    created = _topmost_missing(root)
    try:
        download_and_extract_archive(CIFAR10_URL, download_root=str(root), md5=CIFAR10_TGZ_MD5)
    # URLError and socket errors are OSErrors; a checksum mismatch is a RuntimeError.
    except (OSError, HTTPException, RuntimeError) as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        lines = str(err).strip().splitlines()
        return lines[0] if lines else type(err).__name__
    return None


def ensure_cifar10(root: str | Path, download: bool) -> Path:
    """The batch folder under `root`, downloading the archive first when allowed and missing."""
    root = Path(root).expanduser().resolve()
    found = find_batch_dir(root)
    failure = "downloading is off (data.download=false)"
    if found is None and download:
        error = _try_download(root)
        found = find_batch_dir(root)
        failure = f"the download failed (offline? {error})" if error else "the archive lacked them"
    if found is None:
        raise DataError(
            f"CIFAR-10 not found in {root} (looked for data_batch_1..5, test_batch, batches.meta "
            f"there or in {_BATCH_FOLDER}/ inside it) and {failure}: pass "
            f"data.root=<folder with the batch files> or set DIFFUSION_LAB_DATA"
        )
    return found


def load_cifar10(
    root: str | Path, train: bool, download: bool, verify_checksums: bool = True
) -> tuple[Tensor, Tensor]:
    """The CIFAR-10 train or test split under `root` as uint8 images and int64 labels; its
    files are checked against the official md5 sums unless `verify_checksums` is false."""
    checksums = OFFICIAL_MD5 if verify_checksums else None
    return read_cifar10_split(ensure_cifar10(root, download), train, checksums)
