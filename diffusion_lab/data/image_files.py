"""Folders of PNG and JPEG files, one sub-folder per class, decoded into uint8 tensors.

A class folder's images are the files directly inside it whose names end in .png, .jpg or
.jpeg (any case). Other files, nested folders and hidden entries (names starting with ".")
are skipped, and the skipped files are counted in one warning. Every image is decoded to
`channels` (1: grey, 3: RGB; alpha is dropped, 16-bit PNGs are scaled to 8 bits, JPEG EXIF
rotation is applied), centre-cropped to a square and resized to `size`, so folders of mixed
sizes and aspect ratios load as one (N, C, size, size) tensor.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from diffusion_lab.data.tensors import resize_uint8
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.progress import progress_bar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Decoding threads by default: PIL's decoders and the resize release the GIL.
DEFAULT_THREADS = min(8, os.cpu_count() or 1)
# Files per thread task: one task per small file would cost more than decoding it.
CHUNK = 64

ClassFiles = dict[str, list[Path]]


def _visible(entries: Iterable[Path]) -> list[Path]:
    """The entries whose names do not start with "." (no .DS_Store, .ipynb_checkpoints), sorted."""
    return sorted(p for p in entries if not p.name.startswith("."))


def class_folder_names(root: Path) -> list[str]:
    """Sorted names of the (visible) sub-folders of `root`: the classes, in label order."""
    if not root.is_dir():
        raise DataError(f"data.root={root}: no such folder")
    return [p.name for p in _visible(root.iterdir()) if p.is_dir()]


def is_image_file(path: Path) -> bool:
    """A visible file with a PNG or JPEG name."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def scan_classes(root: Path) -> ClassFiles:
    """Every class folder of `root` with its sorted image files; DataError for an empty class."""
    found: ClassFiles = {}
    skipped: list[Path] = []
    for name in class_folder_names(root):
        found[name] = []
        for path in _visible((root / name).iterdir()):
            (found[name] if is_image_file(path) else skipped).append(path)
        if not found[name]:
            raise DataError(f"data.root={root}: class folder {name!r} holds no PNG or JPEG images")
    if skipped:
        warnings.warn(
            f"data.root={root}: skipped {len(skipped)} entries that are not PNG or JPEG files "
            f"in a class folder (e.g. {skipped[0]})",
            stacklevel=2,
        )
    return found


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grey PNGs open in mode I;16 or I: scale them to 0..255 (65535 / 257 = 255), where
    PIL's own conversion would clip everything above 255."""
    if not image.mode.startswith("I"):
        return image
    pixels = np.asarray(image).astype(np.float32) / 257
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def read_pixels(path: Path, channels: int) -> Tensor:
    """A file's pixels as uint8 (channels, H, W), upright (EXIF) and converted to grey or RGB."""
    with Image.open(path) as image:
        upright = _eight_bit(ImageOps.exif_transpose(image))
        pixels = np.array(upright.convert("L" if channels == 1 else "RGB"))
    return torch.from_numpy(pixels.reshape(*pixels.shape[:2], channels)).permute(2, 0, 1)


def centre_square(image: Tensor) -> Tensor:
    """The largest centred square of a (C, H, W) image."""
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[..., top : top + side, left : left + side]


def decode_file(path: Path, channels: int, size: int) -> Tensor:
    """One image file as uint8 (channels, size, size); DataError naming the file if unreadable."""
    try:
        pixels = read_pixels(path, channels)
    # PIL reports a damaged or foreign file with any of these.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable PNG or JPEG image ({reason})") from None
    return resize_uint8(centre_square(pixels)[None].contiguous(), size)[0]


def parallel_for(fn: Callable[[int], object], n: int, threads: int, desc: str) -> None:
    """Call fn(0), ..., fn(n - 1) in `threads` threads, up to CHUNK indices per task, with a
    progress bar. The first error stops it: tasks not yet started are cancelled."""
    # Small enough that every thread gets several tasks, however few the items.
    chunk = max(1, min(CHUNK, n // (4 * threads)))

    def run_chunk(start: int) -> int:
        stop = min(start + chunk, n)
        for index in range(start, stop):
            fn(index)
        return stop - start

    with (
        ThreadPoolExecutor(max_workers=threads) as pool,
        progress_bar(n, desc) as bar,
    ):
        for done in pool.map(run_chunk, range(0, n, chunk)):
            bar.update(done)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to n for the block. The decoding threads are the parallelism:
    intra-op threads under each of them would oversubscribe the cores (DataLoader workers run
    with one for the same reason); measured 5x slower per resize of a large photo."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def decode_files(paths: Sequence[Path], channels: int, size: int, threads: int) -> Tensor:
    """Decode `paths` into one uint8 (N, channels, size, size) tensor, in order."""
    if channels not in (1, 3):
        raise DataError(f"data.channels={channels}: must be 1 (grey) or 3 (RGB) for image files")
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)

    def decode_into(index: int) -> None:
        out[index] = decode_file(paths[index], channels, size)

    with torch_threads(1):
        parallel_for(decode_into, len(paths), threads, "decoding images")
    return out


def hold_out(
    files: ClassFiles, fraction: float, seed: int, root: Path
) -> tuple[ClassFiles, ClassFiles]:
    """Split every class into (train, test) files: round(fraction * n) of its n images (at
    least one when fraction > 0) go to test, drawn by a permutation seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    train: ClassFiles = {}
    test: ClassFiles = {}
    for name, paths in files.items():
        n = len(paths)
        k = max(1, round(fraction * n)) if fraction > 0 else 0
        if k >= n:
            raise DataError(
                f"data.root={root}: class {name!r} has {n} image(s), too few to hold out "
                f"data.test_fraction={fraction} for testing; add images or use train/ and test/"
            )
        order = torch.randperm(n, generator=generator).tolist()
        test[name] = sorted(paths[i] for i in order[:k])
        train[name] = sorted(paths[i] for i in order[k:])
    return train, test


def flatten(files: ClassFiles) -> tuple[list[Path], Tensor]:
    """All files class by class, and their int64 labels (the class's position)."""
    paths = [path for class_files in files.values() for path in class_files]
    counts = [len(class_files) for class_files in files.values()]
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return paths, labels
