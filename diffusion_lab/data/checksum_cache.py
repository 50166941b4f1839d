"""Digests of large data files, computed once per version of the files and remembered.

The cache is one JSON file in a per-user folder (never beside the data, which may be read-only):
$DIFFUSION_LAB_CACHE, else $XDG_CACHE_HOME/diffusion_lab, else ~/.cache/diffusion_lab. An
entry is used only while every file it covers keeps its resolved path, size and modification
time, so a changed or replaced file is digested again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from diffusion_lab.utils.files import atomic_path

log = logging.getLogger(__name__)
CACHE_ENV = "DIFFUSION_LAB_CACHE"
CACHE_FILE = "digests.json"


def cache_dir() -> Path:
    """The user's cache folder of diffusion_lab."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffusion_lab"


def read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries; none when it is missing or unreadable (it is only a shortcut)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def file_versions(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """What identifies one version of each file for the cache."""
    versions = []
    for path in paths:
        stat = path.stat()
        versions.append(
            {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )
    return versions


def cached_digest(paths: Sequence[Path], kind: str, compute: Callable[[], str]) -> str:
    """The digest `kind` of the files `paths` together: from the cache while they are
    unchanged, else `compute()`d now and remembered."""
    cache_path = cache_dir() / CACHE_FILE
    entries = read_cache(cache_path)
    versions = file_versions(paths)
    key = f"{kind}:" + "|".join(version["path"] for version in versions)
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("files") == versions and "digest" in entry:
        return str(entry["digest"])
    digest = compute()
    entries[key] = {"files": versions, "digest": digest}
    try:
        with atomic_path(cache_path) as tmp:
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    # A read-only home only costs digesting again next time.
    except OSError as err:
        log.warning("could not write the checksum cache %s (%s)", cache_path, err)
    return digest
