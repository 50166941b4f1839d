"""summarize_classify_sweep on fake job folders: the table, the paired differences, the figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffusion_lab.errors import DataError
from diffusion_lab.reporting import summarize_classify_sweep

# mode -> seed -> (test accuracy, per-class accuracy of classes a and b)
RESULTS = {
    "real": {1: (0.50, 0.40, 0.60), 2: (0.60, 0.50, 0.70)},
    "augmented": {1: (0.55, 0.50, 0.60), 2: (0.65, 0.70, 0.60)},
    "synthetic": {1: (0.30, 0.20, 0.40)},
}


def fake_job(folder: Path, mode: str, seed: int, acc: float, a: float, b: float) -> None:
    """A job folder as `classify` leaves it: .hydra/config.yaml and metrics.json."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        f"mode: {mode}\nseed: {seed}\ndata:\n  _target_: diffusion_lab.data.DigitsDataModule\n"
    )
    metrics = {
        "mode": mode,
        "seed": seed,
        "test/acc": acc,
        "test/per_class_acc": {"a": a, "b": b},
        "n_real": 0 if mode == "synthetic" else 100,
        "n_generated": 0 if mode == "real" else 1000,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    job = 0
    for mode, seeds in RESULTS.items():
        for seed, values in seeds.items():
            fake_job(tmp_path / str(job), mode, seed, *values)
            job += 1
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    return tmp_path


def test_report_lists_mean_std_per_mode_and_paired_class_differences(sweep):
    report, figure = summarize_classify_sweep(sweep)
    text = report.read_text()
    assert "| real | 2 (1, 2) | 55.00 ± 7.07 | 100 | 0 |" in text
    assert "| augmented | 2 (1, 2) | 60.00 ± 7.07 | 100 | 1000 |" in text
    assert "| synthetic | 1 (1) | 30.00 ± 0.00 | 0 | 1000 |" in text
    assert "5 runs on DigitsDataModule" in text
    # class a: augmented - real per seed = +10, +20 points; synthetic - real = -20 (seed 1 only)
    row_a = next(line for line in text.splitlines() if line.startswith("| a |"))
    assert row_a.split(" | ")[-2:] == ["15.00 ± 7.07", "-20.00 ± 0.00 |"]
    assert figure.name == "per_class_accuracy.png" and figure.read_bytes()[:4] == b"\x89PNG"
    assert not list(sweep.glob(".*.tmp"))


def test_a_folder_without_jobs_is_refused(tmp_path):
    with pytest.raises(DataError, match="no classify job folders"):
        summarize_classify_sweep(tmp_path)
