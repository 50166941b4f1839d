"""Writing files so that no reader ever sees half of one, and one writer per folder.

A write goes to a temporary name beside its target, `.<name>.<host>.<pid>.<token>.tmp`, is
flushed to disk and renamed over the target. The name is unique per process, so two writers
never share a temporary, and it tells whether its writer may still be alive: the first write
into a folder removes the temporaries that processes of this host which no longer run left
behind (a kill between write and rename).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffusion_lab.utils.errors import ConfigError, UserFacingError

# One hostname label, without dots, so the temporary name splits unambiguously.
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
# Folders whose dead temporaries this process already removed: one listing per folder.
_swept: set[Path] = set()


def temp_name(path: Path) -> Path:
    """A temporary path beside `path`, unique to this process and call."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this host (one of another user counts as running)."""
    if pid <= 0:  # kill(0) and kill(-n) would address process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path) -> bool:
    """A temporary of this naming whose writer, on this host, has exited."""
    match = TEMP_NAME.match(path.name)
    if match is None or match["host"] != HOST:
        return False
    pid = int(match["pid"])
    return pid != os.getpid() and not pid_alive(pid)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporaries in `folder` that dead processes left; returns them."""
    removed = []
    for path in folder.glob(".*.tmp"):
        if is_stale_temp(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def fsync_file(path: Path) -> None:
    """Flush a file's content to disk."""
    with path.open("rb") as f:
        os.fsync(f.fileno())


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the OS and filesystem allow it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder cannot be opened on every OS
        return
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems refuse fsync on a folder
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` when the block succeeds.

    The file is flushed to disk before the rename and the folder after it, so a crash leaves
    either the old or the new content. On failure the temporary is removed and `path` keeps
    its old content.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() not in _swept:
        remove_stale_temps(folder)
        _swept.add(folder.resolve())
    tmp = temp_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_folder(folder)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)


class FolderLocked(UserFacingError):
    """Another process holds the lock on a folder."""


def _read_holder(fd: int) -> str:
    """The pid a lock file records, or '?' when it has none yet."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return text if text.isdigit() else "?"


@contextmanager
def folder_lock(folder: str | Path, what: str, name: str = ".lock") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` for the block: the file `name` in it, with our pid.

    The lock is an flock(2) on that file, so the kernel releases it when its holder dies: a
    lock file left by a killed process is simply taken over. A second writer gets a one-line
    FolderLocked naming the folder and the holder's pid. `what` names the folder for it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderLocked(
                f"{what}={folder}: another process (pid {holder}) is writing into it; wait for "
                f"it to finish or pass another folder"
            ) from None
        # The previous holder may have removed the file between our open and flock: lock the
        # file that is there now, or try again.
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (`algorithm` as hashlib names it), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file: the checksum of shards, checkpoints and weights files."""
    return file_digest(path, "sha256")


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = min(int(math.log(max(n, 1), 1024)), len(units) - 1)
    return f"{n / 1024**power:.1f} {units[power]}" if power else f"{n} B"


def existing_ancestor(path: Path) -> Path:
    """`path` or the nearest of its parents that exists (where it would be made)."""
    return next(p for p in (path, *path.parents) if p.exists())


def check_folder_can_be_made(key: str, folder: str | Path) -> None:
    """Refuse, before any work, a folder that cannot be made or written into: one on a path
    through a file (ConfigError), or under a folder this process may not write (the OS's own
    OSError, naming `folder`, for `report_user_errors` to word).

    The test is the operating system's answer to making a folder there (made and removed at
    once), so root, ACLs and read-only mounts count as they will for the real folder.
    """
    folder = Path(folder).expanduser()
    ancestor = existing_ancestor(folder.absolute())
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={folder}: {ancestor} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=ancestor))
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(folder)) from None
