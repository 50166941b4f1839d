"""Generated sets: a folder of uint8 image shards and the manifest that describes and verifies them.

Layout. The set holds `per_class` images of each of `num_classes` classes in class-major order:
image g (0-based) has label g // per_class. Shard k holds images [k * shard_size, (k + 1) *
shard_size) of that order (the last shard may be shorter), so every class gets exactly per_class
images, no index is made twice and a missing shard is a visible gap. Each shard is a
`torch.save`d dict {"images": uint8 (n, C, H, W), "labels": int64 (n,)} named shard_00000.pt,
written under a temporary name beside its target and renamed when complete.

`manifest.json` holds the settings that made the set and the list of finished shards with their
sha256. A reader accepts a set only when every shard of the layout is listed and matches its
checksum, shape and labels.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import atomic_path, sha256_file

MANIFEST_NAME = "manifest.json"
# The lock `generate` holds on a set folder while it writes (diffusion_lab.utils.files.folder_lock).
LOCK_NAME = ".lock"
FORMAT = "diffusion_lab generated set"
FORMAT_VERSION = 1
# Manifest keys that do not decide which images a set holds (a moved checkpoint keeps its hash).
NON_IDENTITY_KEYS = frozenset({"shards", "checkpoint_path"})


@dataclass(frozen=True)
class GeneratedSet:
    """A complete, verified set: images uint8 (N, C, H, W), labels int64 (N,), class-major."""

    images: Tensor
    labels: Tensor
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ShardSpec:
    """Shard `index` holds the images [start, start + count) of the class-major order."""

    index: int
    start: int
    count: int

    @property
    def file(self) -> str:
        return f"shard_{self.index:05d}.pt"

    def labels(self, per_class: int) -> Tensor:
        """int64 (count,): the label of each image of this shard."""
        return torch.arange(self.start, self.start + self.count) // per_class


def shard_layout(num_classes: int, per_class: int, shard_size: int) -> list[ShardSpec]:
    """All shards of a set, in order."""
    total = num_classes * per_class
    return [
        ShardSpec(k, start, min(shard_size, total - start))
        for k, start in enumerate(range(0, total, shard_size))
    ]


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard `index`'s noise generator: a function of (seed, index) only."""
    digest = hashlib.sha256(f"diffusion_lab/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any torch.Generator takes it


def new_manifest(
    *, num_classes: int, per_class: int, img_size: int, channels: int, shard_size: int, **meta: Any
) -> dict[str, Any]:
    """A manifest with no shards yet; `meta` (JSON values) adds the settings that made the set."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_classes": num_classes,
        "per_class": per_class,
        "num_images": num_classes * per_class,
        "img_size": img_size,
        "channels": channels,
        "shard_size": shard_size,
        **meta,
        "shards": [],
    }


def layout_of(manifest: dict[str, Any]) -> list[ShardSpec]:
    """The shard layout a manifest promises."""
    return shard_layout(manifest["num_classes"], manifest["per_class"], manifest["shard_size"])


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically, its shards sorted by index."""
    manifest = {**manifest, "shards": sorted(manifest["shards"], key=lambda s: s["index"])}
    path = Path(root) / MANIFEST_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the set in `root`; DataError when there is none or it is not one."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"generated set {root}: no such folder")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"generated set {root}: no {MANIFEST_NAME}, so not a generated set")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"generated set {root}: {MANIFEST_NAME} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"generated set {root}: {MANIFEST_NAME} is not a generated-set manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"generated set {root}: format_version={manifest.get('format_version')!r}, "
            f"this version reads {FORMAT_VERSION}"
        )
    check_schema(path, manifest)
    return manifest


# What every reader relies on: positive counts and sizes, and per shard its index and checksum.
COUNT_KEYS = ("num_classes", "per_class", "num_images", "img_size", "channels", "shard_size")
SHARD_KEYS = {"index": int, "sha256": str}


def check_schema(path: Path, manifest: dict[str, Any]) -> None:
    """DataError naming the file and the key where a manifest lacks a key or has the wrong type."""
    for key in COUNT_KEYS:
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(f"{path}: {key}={value!r}, expected a positive integer")
    if not isinstance(manifest.get("shards"), list):
        raise DataError(f"{path}: shards={manifest.get('shards')!r}, expected a list of shards")
    for n, entry in enumerate(manifest["shards"]):
        for key, kind in SHARD_KEYS.items():
            value = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DataError(f"{path}: shards[{n}].{key}={value!r}, expected {kind.__name__}")


def write_shard(root: str | Path, spec: ShardSpec, images: Tensor, labels: Tensor) -> dict:
    """Write one shard atomically; returns its manifest entry."""
    path = Path(root) / spec.file
    # Through a file object, so the zip records are not named after the per-process temporary
    # and equal shards have equal bytes (and sha256) whichever process wrote them.
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save({"images": images.cpu().contiguous(), "labels": labels.cpu()}, f)
    return shard_entry(spec, labels, sha256_file(path))


def shard_entry(spec: ShardSpec, labels: Tensor, sha256: str) -> dict[str, Any]:
    """The manifest's record of a finished shard: file, position, label range, checksum."""
    return {
        "file": spec.file,
        "index": spec.index,
        "start": spec.start,
        "count": spec.count,
        "labels": [int(labels[0]), int(labels[-1])],
        "sha256": sha256,
    }


def load_shard(root: Path, spec: ShardSpec, manifest: dict[str, Any], sha256: str | None) -> dict:
    """Read and check one shard against the layout (and `sha256` when given); its data dict."""
    path = root / spec.file
    if not path.is_file():
        raise DataError(f"generated set {root}: {spec.file} is listed but missing")
    raw = path.read_bytes()
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(f"generated set {root}: {spec.file} does not match its sha256 (corrupt)")
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception:  # torch.load raises several types for a damaged file
        raise DataError(f"generated set {root}: {spec.file} is not a readable shard") from None
    images, labels = data.get("images"), data.get("labels")
    shape = (spec.count, manifest["channels"], manifest["img_size"], manifest["img_size"])
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.shape != shape:
        got = (images.dtype, tuple(images.shape)) if isinstance(images, Tensor) else type(images)
        raise DataError(f"generated set {root}: {spec.file} holds {got}, expected uint8 {shape}")
    if not isinstance(labels, Tensor) or not torch.equal(
        labels, spec.labels(manifest["per_class"])
    ):
        raise DataError(f"generated set {root}: {spec.file} labels do not match the set's layout")
    return data


def read_generated_set(root: str | Path) -> GeneratedSet:
    """Read and verify a complete set (counts, checksums, shapes, labels); DataError otherwise."""
    root = Path(root)
    manifest = read_manifest(root)
    layout = layout_of(manifest)
    listed = {entry["index"]: entry for entry in manifest["shards"]}
    done = [spec for spec in layout if spec.index in listed]
    if len(done) < len(layout):
        images = sum(spec.count for spec in done)
        raise DataError(
            f"generated set {root}: partial, {len(done)} of {len(layout)} shards "
            f"({images} of {manifest['num_images']} images); rerun generate with out={root}"
        )
    shards = [load_shard(root, spec, manifest, listed[spec.index]["sha256"]) for spec in layout]
    return GeneratedSet(
        images=torch.cat([s["images"] for s in shards]),
        labels=torch.cat([s["labels"] for s in shards]),
        manifest=manifest,
    )


def check_matches(gen: GeneratedSet, *, img_size: int, channels: int, num_classes: int) -> None:
    """DataError naming the field when the set cannot be mixed with the real data."""
    for key, real in (("img_size", img_size), ("channels", channels), ("num_classes", num_classes)):
        if gen.manifest[key] != real:
            raise DataError(
                f"generated set has {key}={gen.manifest[key]} but the real data have "
                f"{key}={real}; generate with a checkpoint trained on this data"
            )


def write_generated_set(
    root: str | Path, images: Tensor, labels: Tensor, *, shard_size: int, **meta: Any
) -> Path:
    """Write a complete set in one go from uint8 (N, C, H, W) images and int64 (N,) labels.

    Every class 0..num_classes-1 must have the same number of images (num_classes defaults to
    labels.max() + 1); images are stored in class-major order. `meta` goes into the manifest.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise DataError(f"images must be uint8 (N, C, H, H), got {images.dtype} {images.shape}")
    if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        raise DataError(f"labels must be int64 ({images.shape[0]},), got {labels.dtype}")
    num_classes = meta.pop("num_classes", int(labels.max()) + 1)
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or not bool((counts == counts[0]).all()) or counts[0] == 0:
        raise DataError(f"every class needs the same number of images, got {counts.tolist()}")
    order = torch.argsort(labels, stable=True)
    images, labels = images[order], labels[order]
    manifest = new_manifest(
        num_classes=num_classes,
        per_class=int(counts[0]),
        img_size=images.shape[-1],
        channels=images.shape[1],
        shard_size=shard_size,
        **meta,
    )
    Path(root).mkdir(parents=True, exist_ok=True)
    for spec in layout_of(manifest):
        part = slice(spec.start, spec.start + spec.count)
        manifest["shards"].append(write_shard(root, spec, images[part], labels[part]))
    return write_manifest(root, manifest)
