"""MD5 sums of large data files, computed once per version of a file and remembered.

The cache is one JSON file in a per-user folder (never beside the data, which may be read-only):
$DIFFUSION_LAB_CACHE, else $XDG_CACHE_HOME/diffusion_lab, else ~/.cache/diffusion_lab. An
entry is used only while the file keeps its resolved path, size and modification time, so a
changed or replaced file is hashed again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffusion_lab.files import atomic_path, file_digest

log = logging.getLogger(__name__)
CACHE_ENV = "DIFFUSION_LAB_CACHE"
CACHE_FILE = "md5.json"


def cache_dir() -> Path:
    """The user's cache folder of diffusion_lab."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffusion_lab"


def md5_file(path: Path) -> str:
    """Hex md5 of a file (the official CIFAR-10 checksums are md5)."""
    return file_digest(path, "md5")


def read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries; none when it is missing or unreadable (it is only a shortcut)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def file_version(path: Path) -> dict[str, int]:
    """What identifies one version of a file for the cache."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_md5s(paths: Sequence[Path]) -> list[str]:
    """The md5 of each file, from the cache where the file is unchanged, else hashed now."""
    cache_path = cache_dir() / CACHE_FILE
    entries = read_cache(cache_path)
    digests, changed = [], False
    for path in paths:
        key, version = str(path.resolve()), file_version(path)
        entry = entries.get(key)
        if isinstance(entry, dict) and entry == {**version, "md5": entry.get("md5")}:
            digests.append(str(entry["md5"]))
            continue
        digest = md5_file(path)
        entries[key] = {**version, "md5": digest}
        digests.append(digest)
        changed = True
    if changed:
        try:
            with atomic_path(cache_path) as tmp:
                tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        # A read-only home only costs hashing again next time.
        except OSError as err:
            log.warning("could not write the checksum cache %s (%s)", cache_path, err)
    return digests
