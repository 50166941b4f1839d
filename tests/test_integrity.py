"""Data integrity and safe writers: CIFAR-10 checksums and their cache, per-process temporaries,
fsync before rename, stale temporaries, folder locks, and a kill inside a checkpoint write."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

import diffusion_lab.data.checksum_cache as checksum_cache
import diffusion_lab.files as files
from diffusion_lab.data.cifar10 import (
    load_cifar10,
    read_cifar10_split,
    verify_checksums,
)
from diffusion_lab.errors import DataError
from diffusion_lab.files import (
    HOST,
    FolderLocked,
    atomic_path,
    folder_lock,
    remove_stale_temps,
    temp_name,
)
from diffusion_lab.lit.checkpoint import AtomicCheckpointIO
from tests.conftest import REPO_ROOT

PYTHON_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def md5_table(folder: Path) -> dict[str, str]:
    """The md5 of every file in `folder`, as an injected checksum table."""
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A fresh checksum cache for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(checksum_cache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def count_hashing(monkeypatch) -> list[str]:
    """The names of the files hashed (not read from the cache), in order."""
    hashed: list[str] = []
    real = checksum_cache.md5_file

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(checksum_cache, "md5_file", counting)
    return hashed


# --- CIFAR-10 checksums ------------------------------------------------------------------------


def test_files_matching_the_table_are_read(tiny_cifar_dir, own_cache):
    folder, images, labels = tiny_cifar_dir
    x, y = read_cifar10_split(folder, train=True, checksums=md5_table(folder))
    assert torch.equal(x, images) and torch.equal(y, labels)


def test_one_flipped_byte_is_refused_in_one_line_naming_the_file(tiny_cifar_dir, own_cache):
    folder, _, _ = tiny_cifar_dir
    table = md5_table(folder)
    batch = folder / "data_batch_4"
    flip_byte(batch, batch.stat().st_size // 2)
    with pytest.raises(DataError) as info:
        read_cifar10_split(folder, train=True, checksums=table)
    message = str(info.value)
    assert message.startswith(f"{folder / 'data_batch_4'}: md5 ")
    assert f"is not the official CIFAR-10 data_batch_4's {table['data_batch_4']}" in message
    assert "data.verify_checksums=false" in message and "\n" not in message


def test_official_sums_by_default_and_the_opt_out(tiny_cifar_dir, own_cache):
    folder, images, _ = tiny_cifar_dir
    with pytest.raises(DataError, match=re.escape(f"{folder / 'test_batch'}: md5 ")):
        load_cifar10(folder, train=False, download=False)
    x, _ = load_cifar10(folder, train=True, download=False, verify_checksums=False)
    assert torch.equal(x, images)


def test_the_datamodule_verifies_unless_the_config_opts_out(compose_train, tiny_cifar_dir):
    folder, _, _ = tiny_cifar_dir
    data = ["data=cifar10", f"data.root={folder}", "data.val_size=4", "img_size=32"]
    checked = instantiate(compose_train(*data).data)
    with pytest.raises(DataError, match="is not the official CIFAR-10 data_batch_1's"):
        checked.setup("fit")
    trusted = instantiate(compose_train(*data, "data.verify_checksums=false").data)
    trusted.setup("fit")
    assert len(trusted.train_set) + len(trusted.val_set) == 20


def test_sums_are_cached_by_path_size_and_mtime_outside_the_data(
    tiny_cifar_dir, own_cache, count_hashing
):
    folder, _, _ = tiny_cifar_dir
    table = md5_table(folder)
    before = sorted(p.name for p in folder.iterdir())
    read_cifar10_split(folder, train=True, checksums=table)
    assert count_hashing == [f"data_batch_{i}" for i in range(1, 6)]
    read_cifar10_split(folder, train=True, checksums=table)
    assert len(count_hashing) == 5  # paid once
    assert (own_cache / checksum_cache.CACHE_FILE).is_file()
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing beside the data
    # A file changed in place (same size, new mtime) is hashed again, and caught.
    flip_byte(folder / "data_batch_2", 100)
    times = (folder / "data_batch_2").stat()
    os.utime(folder / "data_batch_2", ns=(times.st_atime_ns, times.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="data_batch_2: md5"):
        read_cifar10_split(folder, train=True, checksums=table)
    assert count_hashing[5:] == ["data_batch_2"]


def test_an_unwritable_cache_still_verifies(tiny_cifar_dir, tmp_path, monkeypatch):
    folder, _, _ = tiny_cifar_dir
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv(checksum_cache.CACHE_ENV, str(tmp_path / "a_file" / "cache"))
    table = md5_table(folder)
    read_cifar10_split(folder, train=False, checksums=table)
    flip_byte(folder / "test_batch", 300)
    with pytest.raises(DataError, match="test_batch: md5"):
        read_cifar10_split(folder, train=False, checksums=table)


@pytest.mark.real_data
def test_a_flipped_byte_in_a_real_batch_file_is_refused(cifar10_root, tmp_path, own_cache):
    copy = tmp_path / "data_batch_1"
    shutil.copyfile(cifar10_root / "data_batch_1", copy)
    # The table of the copy under test (the development copy is re-packed, with its own sums).
    table = {"data_batch_1": hashlib.md5(copy.read_bytes()).hexdigest()}
    verify_checksums([copy], table)
    flip_byte(copy, 1_000_000)
    with pytest.raises(DataError, match=re.escape(f"{copy}: md5 ")):
        verify_checksums([copy], table)


# --- Safe writers ------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_are_unique_per_process_and_call(tmp_path):
    target = tmp_path / "last.ckpt"
    first, second = temp_name(target), temp_name(target)
    assert first != second and first.parent == tmp_path
    assert f".last.ckpt.{HOST}.{os.getpid()}." in first.name and first.name.endswith(".tmp")
    # Two writers of one file at once: neither touches the other's temporary.
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the outer block renames last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_file_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    with atomic_path(tmp_path / "metrics.json") as tmp:
        tmp.write_text("{}")
    assert events == ["fsync file", "rename", "fsync folder"]


def test_temporaries_of_dead_writers_go_on_the_next_write(tmp_path):
    dead = tmp_path / f".a.ckpt.{HOST}.{dead_pid()}.0123abcd.tmp"
    alive = tmp_path / f".b.ckpt.{HOST}.{os.getppid()}.0123abcd.tmp"
    other_host = tmp_path / f".c.ckpt.elsewhere.{dead_pid()}.0123abcd.tmp"
    users = tmp_path / "notes.tmp"
    for path in (dead, alive, other_host, users):
        path.write_bytes(b"half")
    with atomic_path(tmp_path / "d.ckpt") as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, other_host.name, users.name, "d.ckpt"]
    )
    assert remove_stale_temps(tmp_path) == []


# The kill lands while the checkpoint writer is half-way through the new file.
KILLED_WRITER = """
import sys, time
import torch
from diffusion_lab.lit.checkpoint import AtomicCheckpointIO

def half_then_hang(obj, f):
    f.write(b"PK\\x03\\x04 half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)

torch.save = half_then_hang
AtomicCheckpointIO().save_checkpoint({"step": 2}, sys.argv[1])
"""


def test_kill_during_a_checkpoint_write_keeps_the_old_one_and_the_next_run_cleans_up(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"step": 1, "w": torch.ones(3)}, ckpt)
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(ckpt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=PYTHON_ENV,
    )
    try:
        assert writer.stdout.readline().strip() == "writing", writer.communicate()[1]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    left = [p.name for p in ckpt.parent.glob(".*.tmp")]
    assert left and f".{writer.pid}." in left[0]  # the killed write's half file
    assert torch.load(ckpt, weights_only=True)["step"] == 1  # the old checkpoint is intact
    AtomicCheckpointIO().save_checkpoint({"step": 3}, ckpt)  # the next run's first save
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(ckpt, weights_only=True)["step"] == 3


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    with folder_lock(tmp_path / "set", "out") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(FolderLocked) as info, folder_lock(tmp_path / "set", "out"):
            pass
        assert str(info.value) == (
            f"out={tmp_path / 'set'}: another process (pid {os.getpid()}) is writing into it; "
            "wait for it to finish or pass another folder"
        )
    assert not lock.exists()  # released: the finished folder holds no lock file
    with folder_lock(tmp_path / "set", "out"):  # and it can be taken again
        pass


def test_a_dead_holders_lock_file_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text(f"{dead_pid()}\n")
    with folder_lock(tmp_path, "out") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"


def test_equal_checkpoints_get_equal_bytes_whatever_the_temporary(tmp_path):
    state = {"step": 1, "w": torch.arange(4.0)}
    for name in ("a", "b"):
        AtomicCheckpointIO().save_checkpoint(state, tmp_path / name / "last.ckpt")
    assert (tmp_path / "a/last.ckpt").read_bytes() == (tmp_path / "b/last.ckpt").read_bytes()
