"""Tests for the data layer: CIFAR-10 reader, digits, tensor ops and the DataModules."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from diffusion_lab.data import DigitsDataModule, InMemoryImages
from diffusion_lab.data import cifar10 as cifar_module
from diffusion_lab.data.cifar10 import (
    CIFAR10_CLASSES,
    ensure_cifar10,
    find_batch_dir,
    load_cifar10,
    read_cifar10_split,
)
from diffusion_lab.data.digits import DIGIT_CLASSES, load_digits_split
from diffusion_lab.data.tensors import (
    already_batched,
    random_hflip,
    resize_uint8,
    split_train_val,
    to_signed_unit,
)
from diffusion_lab.utils.errors import DataError

TinyCifar = tuple[Path, torch.Tensor, torch.Tensor]


def _digits_module(**overrides: object) -> DigitsDataModule:
    """A DigitsDataModule with small, valid defaults."""
    kwargs: dict = dict(batch_size=32, img_size=16, channels=1, num_classes=10, val_size=100)
    kwargs.update(overrides)
    return DigitsDataModule(**kwargs)


# --- CIFAR-10 reader -------------------------------------------------------------------------


def test_reader_returns_exact_pixels_labels_and_order(tiny_cifar_dir: TinyCifar) -> None:
    folder, images, labels = tiny_cifar_dir
    x, y = read_cifar10_split(folder, train=True, digests=None)
    assert x.dtype == torch.uint8 and x.shape == (20, 3, 32, 32)
    assert y.dtype == torch.int64
    assert torch.equal(x, images)
    assert torch.equal(y, labels)
    x_test, y_test = read_cifar10_split(folder, train=False, digests=None)
    assert x_test.shape == (3, 3, 32, 32)
    assert y_test.tolist() == [1, 2, 3]


def test_reader_rows_are_channel_planar(tmp_path: Path) -> None:
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, :1024] = 200  # red plane
    row[0, 1024:2048] = 100  # green plane
    row[0, 2048 + 32 : 2048 + 64] = 7  # second row of the blue plane
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": row, b"labels": [4]}, f, protocol=2)
    x, y = read_cifar10_split(tmp_path, train=False, digests=None)
    assert (x[0, 0] == 200).all() and (x[0, 1] == 100).all()
    assert (x[0, 2, 1] == 7).all() and x[0, 2].sum() == 7 * 32
    assert y.tolist() == [4]


def test_find_batch_dir_accepts_folder_or_parent(tiny_cifar_dir: TinyCifar, tmp_path: Path) -> None:
    folder, _, _ = tiny_cifar_dir
    assert find_batch_dir(folder) == folder
    parent = tmp_path / "parent"
    shutil.copytree(folder, parent / "cifar-10-batches-py")
    assert find_batch_dir(parent) == parent / "cifar-10-batches-py"
    assert find_batch_dir(tmp_path / "nowhere") is None


def test_load_cifar10_from_parent_folder(tiny_cifar_dir: TinyCifar, tmp_path: Path) -> None:
    folder, images, labels = tiny_cifar_dir
    parent = tmp_path / "parent"
    shutil.copytree(folder, parent / "cifar-10-batches-py")
    x, y = load_cifar10(str(parent), train=True, download=False, verify_checksums=False)
    assert torch.equal(x, images) and torch.equal(y, labels)


def test_missing_data_without_download_names_folder_and_fix(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_cifar10(empty, train=True, download=False)
    message = str(info.value)
    assert str(empty.resolve()) in message
    assert "data.root" in message
    assert "\n" not in message


def test_failed_download_gives_one_line_error(tmp_path: Path, monkeypatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network\nsecond line")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as info:
        ensure_cifar10(tmp_path, download=True)
    message = str(info.value)
    assert "download failed" in message and str(tmp_path.resolve()) in message
    assert "\n" not in message


def test_download_extracts_then_loads(
    tiny_cifar_dir: TinyCifar, tmp_path: Path, monkeypatch
) -> None:
    folder, images, _ = tiny_cifar_dir
    calls = []

    def fake_download(url: str, download_root: str, md5: str) -> None:
        calls.append((url, md5))
        shutil.copytree(folder, Path(download_root) / "cifar-10-batches-py")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", fake_download)
    root = tmp_path / "fresh"
    assert ensure_cifar10(root, download=True) == root.resolve() / "cifar-10-batches-py"
    assert calls == [(cifar_module.CIFAR10_URL, cifar_module.CIFAR10_TGZ_MD5)]
    # The stand-in archive holds the tiny batches, not the official files.
    loaded = load_cifar10(root, train=True, download=False, verify_checksums=False)
    assert torch.equal(loaded[0], images)


@pytest.mark.parametrize(
    "content",
    [b"not a pickle", pickle.dumps({b"labels": [1]}), pickle.dumps({b"data": [1], b"labels": [1]})],
)
def test_malformed_batch_file_names_the_file(tiny_cifar_dir: TinyCifar, content: bytes) -> None:
    folder, _, _ = tiny_cifar_dir
    (folder / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError, match="data_batch_3") as info:
        read_cifar10_split(folder, train=True, digests=None)
    assert "\n" not in str(info.value)


def test_wrong_row_length_is_rejected(tiny_cifar_dir: TinyCifar) -> None:
    folder, _, _ = tiny_cifar_dir
    bad = {b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="test_batch"):
        read_cifar10_split(folder, train=False, digests=None)


# --- tensors ---------------------------------------------------------------------------------


def test_getitems_returns_a_batch_and_loader_yields_uint8_batches() -> None:
    images = torch.arange(10 * 1 * 2 * 2, dtype=torch.int64).reshape(10, 1, 2, 2).to(torch.uint8)
    dataset = InMemoryImages(images, torch.arange(10))
    x, y = dataset.__getitems__([3, 1, 7])
    assert torch.equal(x, images[[3, 1, 7]]) and y.tolist() == [3, 1, 7]
    loader = DataLoader(dataset, batch_size=4, collate_fn=already_batched)
    batches = list(loader)
    assert [tuple(b[0].shape) for b in batches] == [(4, 1, 2, 2), (4, 1, 2, 2), (2, 1, 2, 2)]
    assert batches[0][0].dtype == torch.uint8
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(10))


def test_in_memory_images_validates_inputs() -> None:
    with pytest.raises(DataError):
        InMemoryImages(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError):
        InMemoryImages(
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64)
        )


def test_resize_uint8_shape_dtype_and_identity() -> None:
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    resized = resize_uint8(images, 16)
    assert resized.shape == (5, 3, 16, 16) and resized.dtype == torch.uint8
    assert resize_uint8(images, 8) is images
    flat = torch.full((2, 1, 32, 32), 255, dtype=torch.uint8)
    assert (resize_uint8(flat, 7) == 255).all()


def test_to_signed_unit_range() -> None:
    x = to_signed_unit(torch.tensor([0, 255, 128], dtype=torch.uint8))
    assert x.dtype == torch.float32
    assert x[0] == -1.0 and x[1] == 1.0
    assert abs(x[2].item() - (128 / 127.5 - 1)) < 1e-6


def test_random_hflip_flips_about_half() -> None:
    x = torch.randn(2000, 3, 4, 4)
    out = random_hflip(x, generator=torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # every sample is either flipped or untouched
    assert 900 < int(flipped.sum()) < 1100


def test_split_train_val_disjoint_and_deterministic() -> None:
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    labels = torch.arange(100)
    (tr_x, tr_y), (_, va_y) = split_train_val(images, labels, val_size=20, seed=1)
    assert len(tr_y) == 80 and len(va_y) == 20
    assert set(tr_y.tolist()).isdisjoint(va_y.tolist())
    assert sorted(tr_y.tolist() + va_y.tolist()) == list(range(100))
    assert torch.equal(tr_x.flatten().long(), tr_y)  # images stay with their labels
    (_, again), (_, va_again) = split_train_val(images, labels, val_size=20, seed=1)
    assert torch.equal(va_again, va_y) and torch.equal(again, tr_y)
    (_, _), (_, va_other) = split_train_val(images, labels, val_size=20, seed=2)
    assert not torch.equal(va_other, va_y)
    with pytest.raises(DataError, match=r"data\.val_size=100"):
        split_train_val(images, labels, val_size=100, seed=0)


# --- digits ----------------------------------------------------------------------------------


def test_digits_split_sizes_and_values() -> None:
    train_x, train_y = load_digits_split(train=True)
    test_x, test_y = load_digits_split(train=False)
    assert train_x.shape == (1500, 1, 8, 8) and test_x.shape == (297, 1, 8, 8)
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert set(train_y.tolist()) == set(range(10)) == set(test_y.tolist())
    assert int(train_x.max()) == 255 and int(train_x.min()) == 0
    assert len(DIGIT_CLASSES) == 10
    assert torch.equal(load_digits_split(train=False)[0], test_x)  # fixed split


def test_digits_module_batches_and_scaling() -> None:
    module = _digits_module()
    module.setup("fit")
    assert len(module.train_set) == 1400 and len(module.val_set) == 100
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.uint8
    scaled, labels = module.on_after_batch_transfer((x, y), 0)
    assert scaled.dtype == torch.float32
    assert scaled.min() >= -1.0 and scaled.max() <= 1.0
    assert torch.equal(labels, y)
    module.setup("test")
    assert len(module.test_set) == 297
    assert next(iter(module.test_dataloader()))[0].shape[1:] == (1, 16, 16)


class _RecordBatches(pl.LightningModule):
    """A one-parameter model that records what each step receives."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[str, torch.dtype, float, float]] = []

    def _record(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, _ = batch
        self.seen.append((stage, x.dtype, float(x.min()), float(x.max())))
        return (self.weight * x).mean()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return self._record("train", batch)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_receives_signed_unit_floats() -> None:
    model = _RecordBatches()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=_digits_module(random_flip=True))
    assert {stage for stage, *_ in model.seen} == {"train", "val"}
    for _, dtype, low, high in model.seen:
        assert dtype == torch.float32 and low >= -1.0 and high <= 1.0


def test_flip_only_while_training() -> None:
    module = _digits_module(random_flip=True)
    module.setup("fit")
    x, y = next(iter(module.train_dataloader()))
    expected = to_signed_unit(x)
    module.trainer = SimpleNamespace(training=False)
    assert torch.equal(module.on_after_batch_transfer((x, y), 0)[0], expected)
    module.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    flipped = module.on_after_batch_transfer((x, y), 0)[0]
    assert not torch.equal(flipped, expected)
    assert torch.equal(flipped.sort(dim=-1).values, expected.sort(dim=-1).values)


# data.channels=3 and data.num_classes=5 on the digits are rows of tests/test_bad_inputs.py.
def test_invalid_batch_size_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"data\.batch_size=0: must be a positive integer"):
        _digits_module(batch_size=0)


# --- the real CIFAR-10 copy ------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.slow
def test_real_cifar10_counts_and_mean(cifar10_root: Path) -> None:
    # The development copy is re-packed losslessly (its own md5 sums): the documented opt-out.
    train_x, train_y = load_cifar10(
        cifar10_root, train=True, download=False, verify_checksums=False
    )
    test_x, test_y = load_cifar10(cifar10_root, train=False, download=False, verify_checksums=False)
    assert train_x.shape == (50_000, 3, 32, 32) and test_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(train_y, minlength=10).tolist() == [5000] * len(CIFAR10_CLASSES)
    assert torch.bincount(test_y, minlength=10).tolist() == [1000] * len(CIFAR10_CLASSES)
    # An integer sum over (N, C, H*W) is exact and far faster than a float64 copy.
    sums = train_x.flatten(2).sum(dim=(0, 2), dtype=torch.int64).double()
    mean = sums / (train_x.shape[0] * 32 * 32 * 255)
    published = torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64)
    assert torch.allclose(mean, published, atol=1e-3)
    measured = torch.tensor([0.491400, 0.482158, 0.446531], dtype=torch.float64)  # the README's
    assert torch.allclose(mean, measured, atol=1e-6)


def test_failed_download_removes_the_folders_it_created(tmp_path: Path, monkeypatch) -> None:
    def offline_after_mkdir(url: str, download_root: str, md5: str) -> None:
        Path(download_root).mkdir(parents=True)  # as torchvision does before fetching
        raise URLError("no network")

    monkeypatch.setattr(cifar_module, "download_and_extract_archive", offline_after_mkdir)
    with pytest.raises(DataError):
        ensure_cifar10(tmp_path / "data" / "cifar10", download=True)
    assert list(tmp_path.iterdir()) == []
