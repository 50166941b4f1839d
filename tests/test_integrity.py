"""Data integrity and safe writers: CIFAR-10 content digests and their cache, per-process
temporaries, fsync before rename, stale temporaries, folder locks, and a kill inside a
checkpoint write."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

import diffusion_lab.data.checksum_cache as checksum_cache
import diffusion_lab.data.cifar10 as cifar10
import diffusion_lab.utils.files as files
from diffusion_lab.data.cifar10 import content_digest, load_cifar10, read_cifar10_split
from diffusion_lab.lit.checkpoint import AtomicCheckpointIO
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import (
    HOST,
    FolderLocked,
    atomic_path,
    folder_lock,
    remove_stale_temps,
    temp_name,
)
from tests.helpers import dead_pid, start_process


def digest_table(folder: Path) -> dict[str, str]:
    """The content digests of a folder's splits, as an injected table."""
    table = {}
    splits = (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"]))
    for split, names in splits:
        batches = [unpickle(folder / name) for name in names]
        rows = np.concatenate([b[b"data"] for b in batches])
        labels = np.concatenate([np.asarray(b[b"labels"]) for b in batches])
        table[split] = content_digest(rows, labels)
    return table


def unpickle(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def rewrite(path: Path, change) -> None:
    """Load a batch file, let `change` edit its dict, write it back (pickle protocol 2)."""
    batch = unpickle(path)
    change(batch)
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def change_pixel(path: Path, image: int, index: int) -> None:
    """Add 1 (mod 256) to one pixel value of a batch file, rewritten."""

    def change(batch: dict) -> None:
        batch[b"data"] = batch[b"data"].copy()
        batch[b"data"][image, index] += 1

    rewrite(path, change)


def pixel_offset(path: Path) -> int:
    """Where the first image's pixels start in a real batch file (stored as raw bytes)."""
    first = unpickle(path)[b"data"][0].tobytes()
    return path.read_bytes().index(first)


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A fresh checksum cache for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(checksum_cache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def count_digests(monkeypatch) -> list[int]:
    """The image counts of the splits digested (not read from the cache), in order."""
    digested: list[int] = []

    def counting(rows, labels) -> str:
        digested.append(len(rows))
        return content_digest(rows, labels)

    monkeypatch.setattr(cifar10, "content_digest", counting)
    return digested


# --- CIFAR-10 content digests ------------------------------------------------------------------


def test_the_digest_ignores_order_and_sees_every_pixel_and_label():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6)
    digest = content_digest(rows, labels)
    order = rng.permutation(6)
    assert content_digest(rows[order], labels[order]) == digest
    changed = rows.copy()
    changed[3, 1000] ^= 1
    relabelled = labels.copy()
    relabelled[2] = (relabelled[2] + 1) % 10
    # The pairing counts too: swapping two images' labels is a change.
    swapped = labels.copy()
    swapped[[0, 1]] = labels[[1, 0]]
    assert labels[0] != labels[1]
    for other in (content_digest(changed, labels), content_digest(rows, relabelled)):
        assert other != digest
    assert content_digest(rows, swapped) != digest


def test_a_lossless_repack_in_another_order_is_accepted(tiny_cifar_dir, tmp_path, own_cache):
    folder, images, labels = tiny_cifar_dir
    table = digest_table(folder)
    # The same 20 training images, shuffled across the five batch files, written in a new order.
    repack = tmp_path / "repack"
    shutil.copytree(folder, repack)
    order = np.random.default_rng(1).permutation(len(labels))
    rows = images.numpy().reshape(len(labels), -1)[order]
    for i in range(5):
        part = slice(4 * i, 4 * (i + 1))

        def refill(batch, part=part):
            batch[b"data"], batch[b"labels"] = rows[part], labels.numpy()[order][part].tolist()

        rewrite(repack / f"data_batch_{5 - i}", refill)
    assert (repack / "data_batch_1").read_bytes() != (folder / "data_batch_1").read_bytes()
    x, y = read_cifar10_split(repack, train=True, digests=table)
    read = zip(y.tolist(), x.reshape(20, -1).tolist(), strict=True)
    written = zip(labels.tolist(), images.reshape(20, -1).tolist(), strict=True)
    assert sorted(read) == sorted(written)


@pytest.mark.parametrize("change", ["pixel", "label"])
def test_a_changed_pixel_or_label_is_refused_in_one_line_naming_the_split(
    tiny_cifar_dir, own_cache, change
):
    folder, _, _ = tiny_cifar_dir
    table = digest_table(folder)
    batch = folder / "data_batch_4"
    if change == "pixel":
        change_pixel(batch, 2, 2000)
    else:
        rewrite(batch, lambda b: b[b"labels"].__setitem__(1, (b[b"labels"][1] + 1) % 10))
    with pytest.raises(DataError) as info:
        read_cifar10_split(folder, train=True, digests=table)
    message = str(info.value)
    assert message.startswith(f"CIFAR-10 train split in {folder}: its pixels and labels are not")
    assert "data.verify_checksums=false" in message and "\n" not in message
    read_cifar10_split(folder, train=False, digests=table)  # the test split is untouched


def test_official_digests_by_default_and_the_opt_out(tiny_cifar_dir, own_cache):
    folder, images, _ = tiny_cifar_dir
    with pytest.raises(DataError, match=re.escape(f"CIFAR-10 test split in {folder}: ")):
        load_cifar10(folder, train=False, download=False)
    x, _ = load_cifar10(folder, train=True, download=False, verify_checksums=False)
    assert torch.equal(x, images)


def test_the_datamodule_verifies_unless_the_config_opts_out(compose_train, tiny_cifar_dir):
    folder, _, _ = tiny_cifar_dir
    data = ["data=cifar10", f"data.root={folder}", "data.val_size=4", "img_size=32"]
    checked = instantiate(compose_train(*data).data)
    with pytest.raises(DataError, match=r"CIFAR-10 train split in .*: its pixels and labels"):
        checked.setup("fit")
    trusted = instantiate(compose_train(*data, "data.verify_checksums=false").data)
    trusted.setup("fit")
    assert len(trusted.train_set) + len(trusted.val_set) == 20


def test_digests_are_cached_by_path_size_and_mtime_outside_the_data(
    tiny_cifar_dir, own_cache, count_digests
):
    folder, _, _ = tiny_cifar_dir
    table = digest_table(folder)
    before = sorted(p.name for p in folder.iterdir())
    read_cifar10_split(folder, train=True, digests=table)
    assert count_digests == [20]
    read_cifar10_split(folder, train=True, digests=table)
    read_cifar10_split(folder, train=False, digests=table)
    assert count_digests == [20, 3]  # the train split paid once
    assert (own_cache / checksum_cache.CACHE_FILE).is_file()
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing beside the data
    # A file changed in place (a new mtime) is digested again, and caught.
    batch = folder / "data_batch_2"
    change_pixel(batch, 0, 100)
    times = batch.stat()
    os.utime(batch, ns=(times.st_atime_ns, times.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="CIFAR-10 train split"):
        read_cifar10_split(folder, train=True, digests=table)
    assert count_digests == [20, 3, 20]


def test_an_unwritable_cache_still_verifies(tiny_cifar_dir, tmp_path, monkeypatch):
    folder, _, _ = tiny_cifar_dir
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv(checksum_cache.CACHE_ENV, str(tmp_path / "a_file" / "cache"))
    table = digest_table(folder)
    read_cifar10_split(folder, train=False, digests=table)
    change_pixel(folder / "test_batch", 1, 300)
    with pytest.raises(DataError, match="CIFAR-10 test split"):
        read_cifar10_split(folder, train=False, digests=table)


@pytest.mark.real_data
def test_the_shared_copy_passes_the_official_digests_and_a_flipped_byte_is_caught(
    cifar10_root, tmp_path, own_cache
):
    """The shared lossless re-pack passes without data.verify_checksums=false; a copy of its
    test batch with one pixel byte flipped does not."""
    for train in (True, False):
        load_cifar10(cifar10_root, train=train, download=False)
    copy = tmp_path / "test_batch"
    shutil.copyfile(cifar10_root / "test_batch", copy)
    read_cifar10_split(tmp_path, train=False)
    flip_byte(copy, pixel_offset(copy) + 1_000_000)
    with pytest.raises(DataError, match=re.escape(f"CIFAR-10 test split in {tmp_path}: ")):
        read_cifar10_split(tmp_path, train=False)


# --- Safe writers ------------------------------------------------------------------------------


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


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_keeps_the_old_one_and_the_next_run_cleans_up(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"step": 1, "w": torch.ones(3)}, ckpt)
    writer = start_process("-c", KILLED_WRITER, str(ckpt))
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
