"""Opening a generated set's folder for writing: a new set, or the set a killed run left, with
its finished shards verified and adopted (the format itself: `diffusion_lab.data.generated`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion_lab.data.generated import (
    LOCK_NAME,
    MANIFEST_NAME,
    NON_IDENTITY_KEYS,
    layout_of,
    load_shard,
    read_manifest,
    shard_entry,
    write_manifest,
)
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import TEMP_NAME, sha256_file


def check_same_settings(root: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    """DataError naming the first setting in which the set in `root` differs from this run's."""
    keys = [*wanted, *(key for key in found if key not in wanted)]
    for key in keys:
        if key not in NON_IDENTITY_KEYS and found.get(key) != wanted.get(key):
            raise DataError(
                f"out={root}: holds a set made with {key}={found.get(key)!r}, this run has "
                f"{key}={wanted.get(key)!r}; pass a new out= folder (nothing was changed)"
            )


def finished_shards(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Entries of the verified shard files in `root`: listed ones by checksum and content,
    unlisted ones (finished by another process after the last manifest write) by content."""
    listed = {entry["index"]: entry for entry in manifest["shards"]}
    entries = []
    for spec in layout_of(manifest):
        if (root / spec.file).is_file():
            sha256 = listed.get(spec.index, {}).get("sha256")
            data = load_shard(root, spec, manifest, sha256)
            sha256 = sha256 or sha256_file(root / spec.file)
            entries.append(shard_entry(spec, data["labels"], sha256))
    return entries


def is_writer_leftover(path: Path) -> bool:
    """The lock or a temporary of a writer, not a file of the set or of the user."""
    return path.name == LOCK_NAME or TEMP_NAME.match(path.name) is not None


def nothing_made_yet(root: Path, manifest: dict[str, Any]) -> bool:
    """Whether the set in `root` has no finished shard, listed or on disk."""
    return not manifest["shards"] and not any(
        (root / spec.file).exists() for spec in layout_of(manifest)
    )


def open_for_writing(root: str | Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """Create or resume the set in `root`; returns its manifest (written) with the finished shards.

    A folder that holds a set made with other settings, or other files and no manifest, is
    refused untouched; a manifest of a run that failed before its first shard is replaced.
    The caller holds the folder's lock, so no other process writes into `root`.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"out={root}: is a file, not a folder")
    manifest = wanted
    if (root / MANIFEST_NAME).is_file():
        found = read_manifest(root)
        if not nothing_made_yet(root, found):
            check_same_settings(root, found, wanted)
            manifest = {**wanted, "shards": finished_shards(root, found)}
    elif root.is_dir() and any(not is_writer_leftover(p) for p in root.iterdir()):
        raise DataError(
            f"out={root}: holds files but no {MANIFEST_NAME}; pass an empty or new folder"
        )
    # The folder is a set's and we hold its lock, so every temporary is a killed writer's.
    for tmp in root.glob(".*.tmp"):
        tmp.unlink()
    write_manifest(root, manifest)
    return manifest
