"""CIFAR-10 from the official python batch files (`cifar-10-batches-py` layout)."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from collections.abc import Mapping
from http.client import HTTPException
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets.utils import download_and_extract_archive

from diffusion_lab.data.checksum_cache import cached_digest
from diffusion_lab.utils.errors import DataError

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
# Content digest of each split (`content_digest`): order-independent, so every lossless copy of
# the official files has it, whatever the order of its images and batches. Computed from the
# decoded official content, which the shared re-pack in ../shared/data/cifar10 reproduces bit
# for bit (its README: every pixel matches the original PNGs, same images, other order).
OFFICIAL_CONTENT_SHA256: dict[str, str] = {
    "train": "55a61f79a40ece2ceda9fb5f9f7078f6ea2fc4952489cef56682bcf92cfcc260",
    "test": "325704b01eb92e1e2a6215ae6a916bb7db7de054af0c496be1c7be2e0fcfbf5f",
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


def content_digest(rows: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over the sorted sha256s of every image's label byte and 3072 pixel bytes: the
    same for the same images and labels in any order, in any number of batch files."""
    keyed = np.concatenate([labels.astype(np.uint8)[:, None], rows], axis=1)
    per_image = sorted(hashlib.sha256(row.tobytes()).digest() for row in keyed)
    return hashlib.sha256(b"".join(per_image)).hexdigest()


def verify_content(
    split: str, paths: list[Path], rows: np.ndarray, labels: np.ndarray, expected: str
) -> None:
    """DataError naming the split when its decoded content is not the expected one.

    The digest comes from the user's checksum cache while the batch files keep their paths,
    sizes and mtimes, so a split is digested once.
    """
    digest = cached_digest(paths, "cifar10-content-sha256", lambda: content_digest(rows, labels))
    if digest != expected:
        raise DataError(
            f"CIFAR-10 {split} split in {paths[0].parent}: its pixels and labels are not the "
            f"official ones (content sha256 {digest[:16]}..., expected {expected[:16]}...; a "
            f"changed or missing image or label): download it again, or set "
            f"data.verify_checksums=false for data you changed on purpose"
        )


def read_cifar10_split(
    batch_dir: Path, train: bool, digests: Mapping[str, str] | None = OFFICIAL_CONTENT_SHA256
) -> tuple[Tensor, Tensor]:
    """Read the train (data_batch_1..5) or test split: uint8 (N, 3, 32, 32), int64 (N,).

    The decoded split is checked against `digests` (split name -> content digest); None skips
    that.
    """
    split = "train" if train else "test"
    paths = [batch_dir / name for name in (_TRAIN_FILES if train else _TEST_FILES)]
    batches = [_read_batch(path) for path in paths]
    # Rows are channel-planar (1024 red, 1024 green, 1024 blue), so a reshape gives (C, H, W).
    data = np.concatenate([rows for rows, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    if digests is not None:
        verify_content(split, paths, data, labels, digests[split])
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
    content is checked against the official one unless `verify_checksums` is false."""
    digests = OFFICIAL_CONTENT_SHA256 if verify_checksums else None
    return read_cifar10_split(ensure_cifar10(root, download), train, digests)
