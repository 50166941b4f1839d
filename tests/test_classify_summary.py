"""The classify sweep report on job folders in the on-disk format `classify` writes: the tables,
the paired differences, and the figures' content (read back from the matplotlib objects)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from diffusion_lab.reporting import summarize_classify_sweep
from diffusion_lab.reporting.classify_sweep import classify_figures, read_jobs
from diffusion_lab.reporting.epoch_curves import validation_by_epoch
from diffusion_lab.utils.errors import DataError
from tests.helpers import png_pixels

# mode -> seed -> (test accuracy, per-class accuracy of classes a and b)
RESULTS = {
    "real": {1: (0.50, 0.40, 0.60), 2: (0.60, 0.50, 0.70)},
    "augmented": {1: (0.55, 0.50, 0.60), 2: (0.65, 0.70, 0.60)},
    "synthetic": {1: (0.30, 0.20, 0.40)},
}
# Optimizer steps per epoch: augmented has twice the data, so its epochs end at other steps.
STEPS_PER_EPOCH = {"real": 10, "augmented": 20, "synthetic": 10}
EPOCHS = 3


def val_acc(acc: float, epoch: int) -> float:
    """The fake validation accuracy after (0-based) `epoch`: rising to the test accuracy."""
    return acc - 0.05 * (EPOCHS - 1 - epoch)


def val_loss(acc: float, epoch: int) -> float:
    return 2.0 - acc - 0.1 * epoch


def write_events(folder: Path, mode: str, acc: float) -> None:
    """Scalars as a classify run logs them: `train/loss` every 5 steps, and at the end of each
    epoch `val/acc` and `val/loss` at the epoch's last step and again by epoch."""
    per_epoch = STEPS_PER_EPOCH[mode]
    with SummaryWriter(log_dir=str(folder)) as writer:
        for step in range(4, EPOCHS * per_epoch, 5):
            writer.add_scalar("train/loss", 1.0, step)
        for epoch in range(EPOCHS):
            step = (epoch + 1) * per_epoch - 1
            for tag, value in (("acc", val_acc(acc, epoch)), ("loss", val_loss(acc, epoch))):
                writer.add_scalar(f"val/{tag}", value, step)
                writer.add_scalar(f"val_by_epoch/{tag}", value, epoch + 1)


def fake_job(folder: Path, mode: str, seed: int, acc: float, a: float, b: float) -> None:
    """A job folder as `classify` leaves it: .hydra/, metrics.json and event files."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        f"mode: {mode}\nseed: {seed}\ndata:\n  _target_: diffusion_lab.data.DigitsDataModule\n"
    )
    overrides = [f"mode={mode}", f"seed={seed}", "epochs=3"]
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    metrics = {
        "mode": mode,
        "seed": seed,
        "test/acc": acc,
        "test/per_class_acc": {"a": a, "b": b},
        "n_real": 0 if mode == "synthetic" else 100,
        "n_generated": 0 if mode == "real" else 1000,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    write_events(folder, mode, acc)


def fake_sweep(root: Path, results: dict) -> Path:
    job = 0
    for mode, seeds in results.items():
        for seed, values in seeds.items():
            fake_job(root / f"{job}_mode={mode},seed={seed}", mode, seed, *values)
            job += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return fake_sweep(tmp_path / "2026-01-02" / "03-04-05", RESULTS)


def test_report_lists_mean_std_per_mode_and_paired_class_differences(sweep):
    written = summarize_classify_sweep(sweep)
    assert [p.name for p in written] == [
        "report.md",
        "per_class_accuracy.png",
        "per_class_difference.png",
        "validation_curves.png",
    ]
    text = written[0].read_text()
    assert "| real | 2 (1, 2) | 55.00 ± 7.07 | 100 | 0 |" in text
    assert "| augmented | 2 (1, 2) | 60.00 ± 7.07 | 100 | 1000 |" in text
    # One seed: the mean alone, no "± 0.00".
    assert "| synthetic | 1 (1) | 30.00 | 0 | 1000 |" in text
    assert "5 runs on DigitsDataModule" in text
    # class a: augmented - real per seed = +10, +20 points; synthetic - real = -20 (seed 1 only)
    row_a = next(line for line in text.splitlines() if line.startswith("| a |"))
    assert row_a.split(" | ")[-2:] == ["15.00 ± 7.07", "-20.00 |"]
    for path in written[1:]:
        png_pixels(path)
        assert f"![{path.stem}]({path.name})" in text
    assert not list(sweep.glob(".*.tmp"))


def test_runs_with_other_steps_per_epoch_line_up_by_epoch(sweep):
    real = validation_by_epoch(sweep / "0_mode=real,seed=1")
    augmented = validation_by_epoch(sweep / "2_mode=augmented,seed=1")
    assert list(real["acc"]) == list(augmented["acc"]) == [1, 2, 3]
    assert real["acc"][3] == pytest.approx(0.50)
    assert augmented["loss"][1] == pytest.approx(val_loss(0.55, 0))


def test_per_epoch_tags_are_read_with_their_step_as_the_epoch(tmp_path):
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        for epoch in (1, 2):
            writer.add_scalar("val_by_epoch/acc", 0.4 + epoch / 10, epoch)
            writer.add_scalar("val_by_epoch/loss", 1.1 - epoch / 10, epoch)
    curves = validation_by_epoch(tmp_path)
    assert curves["acc"] == pytest.approx({1: 0.5, 2: 0.6})
    assert curves["loss"] == pytest.approx({1: 1.0, 2: 0.9})


def lines_by_label(ax) -> dict[str, tuple[list, list]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


def test_validation_figure_overlays_the_modes_mean_over_seeds_with_spread(sweep):
    figure = classify_figures(sweep, read_jobs(sweep))["validation_curves.png"]
    acc_ax, loss_ax = figure.axes
    assert acc_ax.get_xlabel() == "epoch" and acc_ax.get_ylabel() == "validation accuracy (%)"
    acc = lines_by_label(acc_ax)
    assert list(acc) == ["real (n=2)", "augmented (n=2)", "synthetic (n=1)"]
    assert acc["real (n=2)"][0] == [1, 2, 3]
    assert acc["real (n=2)"][1] == pytest.approx([45.0, 50.0, 55.0])
    assert acc["augmented (n=2)"][1] == pytest.approx([50.0, 55.0, 60.0])
    loss = lines_by_label(loss_ax)
    assert loss["synthetic (n=1)"][1] == pytest.approx([1.7, 1.6, 1.5])
    # A ± std band for each mode with two seeds, none for the one-seed mode.
    assert len(acc_ax.collections) == 2 and len(loss_ax.collections) == 2
    title = figure.get_suptitle()
    assert "2026-01-02/03-04-05" in title
    assert "mode = real, augmented, synthetic; seed = 1, 2" in title


def test_difference_figure_draws_augmented_minus_real_with_spread_over_seeds(sweep):
    figure = classify_figures(sweep, read_jobs(sweep))["per_class_difference.png"]
    [ax] = figure.axes
    bars = {c.get_label(): c for c in ax.containers}
    augmented = bars["augmented − real (n=2)"]
    assert [p.get_height() for p in augmented.patches] == pytest.approx([15.0, -5.0])
    assert augmented.errorbar is not None
    assert bars["synthetic − real (n=1)"].errorbar is None  # one pair: no zero error bars
    assert "mode = real, augmented, synthetic" in ax.get_title()


def test_one_seed_sweep_has_no_plus_minus_and_no_error_bars(tmp_path, capsys):
    one_seed = {"real": {1: (0.50, 0.40, 0.60)}, "augmented": {1: (0.55, 0.50, 0.60)}}
    sweep = fake_sweep(tmp_path, one_seed)
    summarize_classify_sweep(sweep)
    tables = [line for line in (sweep / "report.md").read_text().splitlines() if "|" in line]
    assert "| augmented | 1 (1) | 55.00 | 100 | 1000 |" in tables
    assert not [line for line in tables if "±" in line]
    printed = capsys.readouterr().out
    assert "| real | 1 (1) | 50.00 | 100 | 0 |" in printed and "±" not in printed
    figures = classify_figures(sweep, read_jobs(sweep))
    for name in ("per_class_accuracy.png", "per_class_difference.png"):
        [ax] = figures[name].axes
        assert all(c.errorbar is None for c in ax.containers), name
    assert not figures["validation_curves.png"].axes[0].collections


def test_a_folder_without_jobs_is_refused(tmp_path):
    with pytest.raises(DataError, match="no classify job folders"):
        summarize_classify_sweep(tmp_path)


@pytest.mark.slow
def test_report_of_real_runs_lines_up_the_modes_by_epoch(tmp_path):
    """Two tiny real classify runs (real; augmented, with more steps per epoch) as sweep jobs."""
    from diffusion_lab.jobs.classify import classify
    from tests.test_classify import compose_classify, digits_set

    sweep = tmp_path / "sweep"
    synthetic = digits_set(tmp_path / "set", per_class=20)
    for num, mode in enumerate(("real", "augmented")):
        overrides = [f"mode={mode}", f"synthetic={synthetic}", "epochs=2"]
        folder = sweep / f"{num}_{mode}"  # no "=": compose takes the path as an override
        cfg = compose_classify(folder, *overrides)
        (folder / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
        classify(cfg)
    names = [p.name for p in summarize_classify_sweep(sweep)]
    assert "validation_curves.png" in names and "per_class_difference.png" in names
    figure = classify_figures(sweep, read_jobs(sweep))["validation_curves.png"]
    for ax in figure.axes:
        lines = lines_by_label(ax)
        assert list(lines) == ["real (n=1)", "augmented (n=1)"]
        assert all(epochs == [1, 2] for epochs, _ in lines.values())
    assert "mode = real, augmented" in figure.get_suptitle()
