"""Shared fixtures: commands run in-process, the real CIFAR-10 copy and a tiny dataset in the
official batch format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from tests.helpers import REPO_ROOT, CommandResult, run_command

TINY_TRAIN_PER_BATCH = 4
TINY_TEST_SIZE = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end runs first (in file order), then the unit tests: with `make test`'s
    one-at-a-time scheduling the two workers share the long runs and end together on short
    tests, instead of one worker starting a long run as the other runs out of tests."""
    items.sort(key=lambda item: not any(item.iter_markers("slow")))


@pytest.fixture(scope="session", autouse=True)
def checksum_cache(tmp_path_factory) -> Path:
    """Tests (and the commands they start) keep their checksum cache out of the user's."""
    folder = tmp_path_factory.mktemp("checksum_cache")
    os.environ["DIFFUSION_LAB_CACHE"] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def no_hydra_config_left_behind():
    """Each test starts without the HydraConfig an in-process command (`--cfg`, a run) set."""
    yield
    HydraConfig.instance().cfg = None


@pytest.fixture
def run_cli(monkeypatch, capfd):
    """run_cli(command, *args, cwd=None) -> CommandResult: `python -m diffusion_lab.COMMAND
    ARGS` run in this process (tests/helpers.py run_command), its output captured."""

    def _run(command: str, *args: str, cwd: Path | None = None) -> CommandResult:
        return run_command(command, args, monkeypatch, capfd, cwd)

    return _run


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """The real CIFAR-10 copy: $CIFAR10_ROOT or ../shared/data/cifar10; CI fails without it."""
    root = Path(os.environ.get("CIFAR10_ROOT", REPO_ROOT.parent / "shared" / "data" / "cifar10"))
    if not (root / "data_batch_1").is_file():
        message = f"CIFAR-10 copy not found at {root.resolve()}; set CIFAR10_ROOT"
        # CI must not go green by skipping the only check on the real data.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def _write_pickle(path: Path, obj: object) -> None:
    """Write one batch file as the official ones are written (pickle protocol 2)."""
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def _batch(data: np.ndarray, labels: list[int], name: str) -> dict[bytes, object]:
    """A batch dict with the official byte-string keys."""
    return {
        b"batch_label": name.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


@pytest.fixture
def tiny_cifar_dir(tmp_path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """Five 4-image train batches, a 3-image test batch and batches.meta; (dir, images, labels)."""
    rng = np.random.default_rng(123)
    n_train = 5 * TINY_TRAIN_PER_BATCH
    images = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n_train)]
    folder = tmp_path / "batches"
    folder.mkdir()
    for i in range(5):
        part = slice(i * TINY_TRAIN_PER_BATCH, (i + 1) * TINY_TRAIN_PER_BATCH)
        rows = images[part].reshape(TINY_TRAIN_PER_BATCH, -1)
        _write_pickle(folder / f"data_batch_{i + 1}", _batch(rows, labels[part], f"batch {i}"))
    test = rng.integers(0, 256, size=(TINY_TEST_SIZE, 3072), dtype=np.uint8)
    _write_pickle(folder / "test_batch", _batch(test, [1, 2, 3], "testing batch 1 of 1"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    _write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder, torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64)


# The real training config shrunk to seconds: digits at 8x8, a 2-level UNet of width 8, T=20.
TINY_TRAIN_OVERRIDES = [
    "experiment=quickstart",
    "T=20",
    "img_size=8",
    "batch_size=16",
    "epochs=2",
    "model.ch=8",
    "model.attn_resolutions=[4]",
    "trainer.precision=32-true",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "callbacks.sample_grid.per_class=2",
    "callbacks.sample_grid.every_n_epochs=1",
    "callbacks.checkpoint.every_n_epochs=1",
    "callbacks.progress.refresh_rate=0",
]


@pytest.fixture
def compose_train(tmp_path: Path):
    """compose_train(*overrides) -> the real `train` config, shrunk, writing into tmp_path/run."""
    from diffusion_lab.config.source import compose_config

    def _compose(*overrides: str):
        return compose_config(
            "train", [*TINY_TRAIN_OVERRIDES, f"output_dir={tmp_path / 'run'}", *overrides]
        )

    return _compose
