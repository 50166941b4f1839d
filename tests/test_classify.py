"""`python -m diffusion_lab.classify`: the job, the command and a sweep whose jobs all fail.
Its bad input is in tests/test_bad_inputs.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from diffusion_lab.config.source import compose_config
from diffusion_lab.data.generated import write_generated_set
from diffusion_lab.jobs.classify import classify
from diffusion_lab.utils.errors import ConfigError
from tests.helpers import png_pixels
from tests.test_train import tensorboard_tags

# The strong recipe shrunk to seconds: digits at 8x8, one hidden layer of 64, 4 epochs.
TINY_CLASSIFY_OVERRIDES = [
    "data=digits",
    "img_size=8",
    "model.widths=[64]",
    "model.whitening=standardize",
    "batch_size=64",
    "epochs=4",
    "lr=3e-3",
    "crop_padding=0",
    "trainer=cpu",
    "trainer.precision=32-true",
    "callbacks.progress.refresh_rate=0",
]


def compose_classify(output_dir: Path, *overrides: str):
    """The real `classify` config, shrunk, writing into output_dir."""
    return compose_config(
        "classify", [*TINY_CLASSIFY_OVERRIDES, f"output_dir={output_dir}", *overrides]
    )


def digits_set(root: Path, per_class: int = 8, size: int = 8) -> Path:
    """A generated set of random images: the right shape, useless content."""
    images = torch.randint(0, 256, (10 * per_class, 1, size, size), dtype=torch.uint8)
    write_generated_set(root, images, torch.arange(10).repeat_interleave(per_class), shard_size=16)
    return root


@pytest.mark.slow
def test_classifier_learns_digits_well_above_chance_and_writes_outputs(tmp_path):
    run = tmp_path / "run"
    metrics = classify(compose_classify(run))
    assert metrics["test/acc"] > 0.8  # chance is 0.1
    assert metrics["mode"] == "real" and metrics["n_real"] == 1400 and metrics["n_generated"] == 0
    assert set(metrics["test/per_class_acc"]) == {str(i) for i in range(10)}
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test/acc"] == pytest.approx(metrics["test/acc"])
    assert saved["val/acc"] > 0.8 and saved["train/loss_epoch"] > 0
    for name in ("confusion_matrix.png", "loss_curve.png"):
        png_pixels(run / name)
    tags = tensorboard_tags(run)
    assert "test/acc" in tags["scalars"] and "_hparams_/session_start_info" in tags["hparams"]
    # The HParams table reads test/acc from its curve: no single-point `final/` cards.
    assert not [tag for tag in tags["scalars"] if tag.startswith("final/")]


@pytest.mark.parametrize(
    ("mode", "n_real", "n_generated"), [("augmented", 1400, 80), ("synthetic", 0, 80)]
)
def test_fast_dev_run_in_each_generated_mode(tmp_path, mode, n_real, n_generated):
    synthetic = digits_set(tmp_path / "set")
    cfg = compose_classify(
        tmp_path / "run", f"mode={mode}", f"synthetic={synthetic}", "trainer.fast_dev_run=true"
    )
    metrics = classify(cfg)
    assert (metrics["n_real"], metrics["n_generated"]) == (n_real, n_generated)
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_auto_mode_is_augmented_when_a_set_is_given(tmp_path):
    cfg = compose_classify(
        tmp_path / "run", f"synthetic={digits_set(tmp_path / 'set')}", "trainer.fast_dev_run=true"
    )
    assert classify(cfg)["mode"] == "augmented"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mode=augmented"], "synthetic=None: mode=augmented needs a generated set"),
        (["model.norm=group"], "model.norm='group': must be one of none, batch, layer"),
    ],
)
def test_bad_config_is_refused_before_any_output(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        classify(compose_classify(tmp_path / "run", *overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_classify_command_runs_on_the_digits(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "classify", *TINY_CLASSIFY_OVERRIDES, "epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["test/acc"] > 0.3
    png_pixels(run_dir / "confusion_matrix.png")
    assert "MLP" in (run_dir / ".hydra" / "config.yaml").read_text()


# A sweep of 9 jobs (3 modes x 3 seeds), each composed and checked.
@pytest.mark.slow
def test_augmentation_experiment_without_a_set_fails_each_job_before_training(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "classify", "experiment=part2_augmentation", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert result.returncode == 2
    # A line several jobs share is printed once, then the sweep's summary.
    assert result.stderr.strip().splitlines() == [
        "error: synthetic=None: mode=augmented needs a generated set: synthetic=PATH",
        "error: synthetic=None: mode=synthetic needs a generated set: synthetic=PATH",
        f"error: 9 of 9 sweep jobs failed; see {sweep / 'failures.json'}",
    ]
    failed = json.loads((sweep / "failures.json").read_text())["failed"]
    assert len(failed) == 9 and not list(sweep.glob("*/metrics.json"))
