"""A generated set as PNG files in the layout torchvision's ImageFolder reads.

Image i of class k is `<out>/<kk>_<name>/<iiiii>.png`: `kk` is k zero-padded to at least two
digits and `iiiii` is i (the image's place within its class) to at least five, so ImageFolder,
which sorts folder and file names, gives class k label k and reads the images in the set's
order. `<name>` is the class name with characters other than letters, digits, ".", "-" and "_"
replaced by "_" (no name: the folder is `<kk>` alone). PNG is lossless: the pixels are the set's.

Every file is written under a temporary name and renamed, so a file that exists is complete; a
rerun skips them and writes the rest. `export.json` records which set the folder holds: an
export of another set, or a folder with other files, is refused untouched.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from diffusion_lab.data.generated import GeneratedSet
from diffusion_lab.data.image_files import DEFAULT_THREADS, parallel_for
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import atomic_path, remove_stale_temps

EXPORT_RECORD = "export.json"
EXPORT_FORMAT = "diffusion_lab png export"


def class_folder(label: int, name: str | None, num_classes: int) -> str:
    """`<kk>_<name>`: a fixed-width label first, so sorted folder names are in label order."""
    width = max(2, len(str(num_classes - 1)))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name or "").strip("._")
    return f"{label:0{width}d}_{safe}" if safe else f"{label:0{width}d}"


def png_paths(manifest: dict[str, Any], out: Path) -> list[Path]:
    """The file of every image of the set, in the set's (class-major) order."""
    num_classes, per_class = manifest["num_classes"], manifest["per_class"]
    names = manifest.get("class_names") or [None] * num_classes
    width = max(5, len(str(per_class - 1)))
    return [
        out / class_folder(label, names[label], num_classes) / f"{i:0{width}d}.png"
        for label in range(num_classes)
        for i in range(per_class)
    ]


def export_record(gen: GeneratedSet, source: Path) -> dict[str, Any]:
    """What identifies the exported set: its shards' checksums, and where it was read."""
    checksums = "".join(shard["sha256"] for shard in gen.manifest["shards"])
    return {
        "format": EXPORT_FORMAT,
        "set_sha256": hashlib.sha256(checksums.encode()).hexdigest(),
        "source": str(source.resolve()),
        "num_images": gen.manifest["num_images"],
    }


def open_export(out: Path, record: dict[str, Any]) -> None:
    """Create or resume the export folder `out`; refuse one that holds anything else."""
    path = out / EXPORT_RECORD
    if path.is_file():
        try:
            found = json.loads(path.read_text()).get("set_sha256")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            found = None
        if found != record["set_sha256"]:
            raise DataError(f"out={out}: holds an export of another set; pass a new folder")
        # A killed run can leave temporaries behind: no finished file ever has such a name.
        for folder in (p for p in out.iterdir() if p.is_dir()):
            remove_stale_temps(folder)
    elif out.is_dir() and any(out.iterdir()):
        raise DataError(f"out={out}: holds files but no {EXPORT_RECORD}; pass an empty folder")
    elif out.exists() and not out.is_dir():
        raise DataError(f"out={out}: is a file, not a folder")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def write_png(image: Tensor, path: Path) -> None:
    """Save a uint8 (C, H, W) image (C = 1 or 3) as a PNG file."""
    pixels = image.permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path, format="PNG")


def export_png(
    gen: GeneratedSet, out: str | Path, source: str | Path, threads: int = DEFAULT_THREADS
) -> int:
    """Write the set read from `source` as PNGs under `out`; returns how many files it wrote
    (those already there are kept)."""
    out = Path(out)
    open_export(out, export_record(gen, Path(source)))
    paths = png_paths(gen.manifest, out)
    for folder in dict.fromkeys(path.parent for path in paths):
        folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i, path in enumerate(paths) if not path.exists()]

    def write(index: int) -> None:
        with atomic_path(paths[missing[index]]) as tmp:
            write_png(gen.images[missing[index]], tmp)

    parallel_for(write, len(missing), threads, "writing PNGs")
    return len(missing)
