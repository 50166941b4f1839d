"""The batched classifier stage gives each member the losses of training it alone.

Data: a tiny CIFAR-10 batch folder (16 training images after a validation split of 4, 10 test
images) at 8x8, and a generated set of 2 images per class: with batch 4 a `real`
member has 4 steps per epoch, `synthetic` 5 and `augmented` 9, so in one batched run the
shorter members are masked while `augmented` goes on.

Tolerances. A member's arithmetic is the standalone run's, grouped differently: its linear
layers are slices of batched matrix products (bmm) instead of one mm, its loss is the mean of
per-sample cross-entropies instead of the fused mean, batch norm's statistics are reduced under
vmap, and the clip norm per member. Each result differs by about one float32 rounding, and
training carries the differences on. Without batch norm (the study's recipe) the losses of 18
steps stayed within one rounding (observed 2.4e-7; LOSS_ATOL 1e-6). Batch norm over 8 samples
amplifies them: its backward subtracts two means of the gradient (cancellation), and in eval
mode the running statistics of a few batches meet unwhitened validation directions; observed up
to 1.3e-5 (validation loss; training losses up to 2.4e-6), BN_LOSS_ATOL 1e-4. A member trained
on another epoch order, with another member's masks or on a step it should have skipped moves
its losses by 1e-2 or more.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from diffusion_lab.config.source import compose_config
from diffusion_lab.data.cifar10 import CIFAR10_CLASSES
from diffusion_lab.data.generated import write_generated_set
from diffusion_lab.jobs.classify import classify
from diffusion_lab.jobs.ensemble import classify_ensemble
from diffusion_lab.tracking.loss_history import read_loss_history
from diffusion_lab.utils.errors import ConfigError
from tests.helpers import png_pixels
from tests.test_train import tensorboard_tags

LOSS_ATOL = 1e-6
BN_LOSS_ATOL = 1e-4

TINY = [
    "data=cifar10",
    "data.download=false",
    "data.verify_checksums=false",
    "data.val_size=8",
    "img_size=8",
    "batch_size=8",
    "epochs=2",
    "model.widths=[32,32]",
    "trainer=cpu",
    "trainer.precision=32-true",
    "callbacks.progress.refresh_rate=0",
]
# The study's recipe (Adam, constant lr, standardised pixels, ReLU, no clipping), lr raised so
# that 18 steps move the weights far.
STUDY = ["model=mlp_seed", "lr=1e-2"]
# The strong recipe: batch norm, dropout, ZCA, AdamW with warm-up and cosine, label smoothing,
# flips and crops; clipping at 0.1 so that it acts on every step.
STRONG = ["model=mlp", "lr=1e-3", "trainer.gradient_clip_val=0.1"]


def write_cifar_batches(folder: Path, gen: torch.Generator) -> Path:
    """A CIFAR-10 batch folder (official layout): 5 x 8 training images and 10 test images of
    random pixels, every class in both splits."""
    folder.mkdir()
    images = torch.randint(0, 256, (50, 3072), generator=gen, dtype=torch.uint8).numpy()
    labels = torch.cat([torch.randperm(40, generator=gen), torch.randperm(10, generator=gen)]) % 10
    labels = labels.tolist()
    parts: dict[str, dict] = {
        f"data_batch_{i + 1}": {
            b"data": images[8 * i : 8 * i + 8],
            b"labels": labels[8 * i : 8 * i + 8],
        }
        for i in range(5)
    }
    parts["test_batch"] = {b"data": images[40:], b"labels": labels[40:]}
    parts["batches.meta"] = {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
    for name, content in parts.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return folder


@pytest.fixture
def tiny_data(tmp_path) -> tuple[Path, Path]:
    """(a tiny CIFAR-10 batch folder, a generated set of 4 random 8x8 images per class)."""
    gen = torch.Generator().manual_seed(5)
    root = write_cifar_batches(tmp_path / "cifar", gen)
    images = torch.randint(0, 256, (40, 3, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.arange(10).repeat_interleave(4)
    write_generated_set(tmp_path / "set", images, labels, shard_size=16)
    return root, tmp_path / "set"


def compose(data: tuple[Path, Path], run: Path, *overrides: str):
    root, synthetic = data
    return compose_config(
        "classify",
        [*TINY, f"data.root={root}", f"synthetic={synthetic}", f"output_dir={run}", *overrides],
    )


def standalone(data: tuple[Path, Path], run: Path, mode: str, seed: int, *overrides: str):
    """One `classify` run (ClassifierModule under a Lightning Trainer): history and metrics."""
    metrics = classify(compose(data, run, f"mode={mode}", f"seed={seed}", *overrides))
    return read_loss_history(run / "loss_history.csv"), metrics


def batched(data: tuple[Path, Path], run: Path, modes: str, seeds: str, *overrides: str):
    """The batched stage: each member's history by name, and the metrics."""
    metrics = classify_ensemble(compose(data, run, f"modes={modes}", f"seeds={seeds}", *overrides))
    names = [f"{m['mode']}_seed{m['seed']}" for m in metrics["members"]]
    return {n: read_loss_history(run / f"loss_history_{n}.csv") for n in names}, metrics


def member(metrics: dict, mode: str, seed: int) -> dict:
    return next(m for m in metrics["members"] if (m["mode"], m["seed"]) == (mode, seed))


def max_loss_difference(a, b) -> float:
    """Largest difference of the per-step and validation losses of two histories."""
    assert a.train_steps == b.train_steps and a.val_steps == b.val_steps
    pairs = [(a.train_losses, b.train_losses), (a.val_losses, b.val_losses)]
    return max(float((torch.tensor(x) - torch.tensor(y)).abs().max()) for x, y in pairs)


@pytest.mark.slow
def test_study_recipe_members_match_their_standalone_runs(tiny_data, tmp_path):
    histories, metrics = batched(
        tiny_data, tmp_path / "batched", "[real,augmented,synthetic]", "[1,2]", *STUDY
    )
    assert [(m["mode"], m["steps"]) for m in metrics["members"][::2]] == [
        ("real", 8),
        ("augmented", 18),
        ("synthetic", 10),
    ]
    for mode, seed in (("real", 1), ("augmented", 2), ("synthetic", 1)):
        alone, alone_metrics = standalone(tiny_data, tmp_path / f"{mode}{seed}", mode, seed, *STUDY)
        name = f"{mode}_seed{seed}"
        assert max_loss_difference(histories[name], alone) <= LOSS_ATOL, name
        assert member(metrics, mode, seed)["test/acc"] == pytest.approx(alone_metrics["test/acc"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("norm", "atol"), [("model.norm=batch", BN_LOSS_ATOL), ("model.norm=none", LOSS_ATOL)]
)
def test_strong_recipe_members_do_not_depend_on_the_other_members(tiny_data, tmp_path, norm, atol):
    """Dropout masks, flips and crops are keyed by (seed, own step): a member of a 6-member run
    trains as the same member alone (a 1-member run), up to the rounding of the grouping."""
    overrides = [*STRONG, norm]
    histories, _ = batched(
        tiny_data, tmp_path / "all", "[real,augmented,synthetic]", "[1,2]", *overrides
    )
    for mode, seed in (("augmented", 2), ("synthetic", 1)):
        run = tmp_path / f"{mode}{seed}"
        alone, _ = batched(tiny_data, run, f"[{mode}]", f"[{seed}]", *overrides)
        name = f"{mode}_seed{seed}"
        assert max_loss_difference(histories[name], alone[name]) <= atol, name


@pytest.mark.slow
def test_strong_recipe_without_random_draws_matches_the_standalone_runs(tiny_data, tmp_path):
    """Batch norm, ZCA, AdamW with warm-up and cosine, label smoothing and clipping, with
    dropout, flips and crops off: those draw from torch's global generator in the standalone
    run, a stream the batched run cannot reproduce per member."""
    deterministic = [*STRONG, "model.dropout=0", "data.random_flip=false", "crop_padding=0"]
    histories, metrics = batched(
        tiny_data, tmp_path / "batched", "[real,augmented]", "[1,2]", *deterministic
    )
    for mode, seed in (("real", 2), ("augmented", 1)):
        alone, alone_metrics = standalone(
            tiny_data, tmp_path / f"{mode}{seed}", mode, seed, *deterministic
        )
        name = f"{mode}_seed{seed}"
        assert max_loss_difference(histories[name], alone) <= BN_LOSS_ATOL, name
        assert member(metrics, mode, seed)["test/acc"] == pytest.approx(alone_metrics["test/acc"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=cnn"], "model='diffusion_lab.nets.CNN': the batched stage trains MLPs"),
        (["trainer.devices=2"], "trainer.devices=2: the batched stage runs on one device"),
        (["+optimizer.amsgrad=true"], "the batched stage runs Adam or AdamW (no amsgrad)"),
    ],
)
def test_settings_the_batched_stage_cannot_run_are_refused_before_any_output(
    tiny_data, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=re.escape(message)):
        classify_ensemble(compose(tiny_data, tmp_path / "run", "seeds=[1]", *overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_command_writes_metrics_figures_and_histories(run_cli, tiny_data, tmp_path):
    run = tmp_path / "run"
    root, synthetic = tiny_data
    result = run_cli(
        "classify",
        *TINY,
        *STUDY,
        f"data.root={root}",
        f"synthetic={synthetic}",
        "modes=[real,augmented]",
        "seeds=[3,4]",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "classify: test/acc real " in result.stdout and "(mean of 2 seed(s))" in result.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert [(m["mode"], m["seed"]) for m in metrics["members"]] == [
        ("real", 3),
        ("real", 4),
        ("augmented", 3),
        ("augmented", 4),
    ]
    real = metrics["modes"]["real"]
    assert real["test/acc_mean"] == pytest.approx(sum(real["test/acc"]) / 2)
    assert len(metrics["members"][0]["val/acc"]) == 2 and metrics["batched_steps"] == 18
    for name in ("loss_curves_real", "loss_curves_augmented", "confusion_augmented"):
        png_pixels(run / f"{name}.png")
    history = read_loss_history(run / "loss_history_augmented_seed4.csv")
    assert history.train_steps == list(range(1, 19)) and history.val_steps == [9, 18]
    tags = tensorboard_tags(run)["scalars"]
    assert {"val_by_epoch/acc/real_seed3", "test/acc/augmented_seed4"} <= set(tags)
