"""`python -m diffusion_lab.report`: identical noise per row, the files it writes, bad input.

A fake sweep is built in seconds: tiny untrained DDPMs saved as checkpoints with their run
config, Hydra's `.hydra/` files, metrics.json and a few TensorBoard scalars per job.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from diffusion_lab import report
from diffusion_lab.reporting import FINAL_CKPT, job_dirs, row_labels
from diffusion_lab.reporting.training_sweep import (
    THINNED,
    loss_figure,
    quality_figure,
    schedule_caveat,
    schedule_differences,
)
from diffusion_lab.runs.checkpoints import RUN_CONFIG_KEY
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.tracking.loss_history import (
    HISTORY_FILE,
    LossHistory,
    read_loss_history,
    write_loss_history,
)
from tests.conftest import REPO_ROOT

HISTORY_STEPS = 12


def write_job(
    job: Path,
    cfg,
    overrides: list[str],
    kind: str = "train",
    finished: bool = True,
    history: bool = True,
    metrics: dict | None = None,
):
    """One Hydra job folder as `train` leaves it (or, unfinished, as it is mid-run); without
    `history`, as runs left it before `loss_history.csv` existed."""
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    OmegaConf.save(
        OmegaConf.create({"hydra": {"job": {"name": kind}}}), job / ".hydra" / "hydra.yaml"
    )
    if not finished:
        return
    config = OmegaConf.to_container(cfg, resolve=True)
    module = instantiate(cfg.module)
    (job / "checkpoints").mkdir()
    torch.save({"state_dict": module.state_dict(), RUN_CONFIG_KEY: config}, job / FINAL_CKPT)
    metrics = {"val/loss": 0.5, "global_step": HISTORY_STEPS} | (metrics or {})
    (job / "metrics.json").write_text(json.dumps(metrics))
    # The event files hold every 3rd training loss, the history file every one.
    with SummaryWriter(log_dir=str(job)) as writer:
        for step in range(2, HISTORY_STEPS, 3):
            writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("val/loss", 0.5, HISTORY_STEPS)
    if history:
        steps = list(range(1, HISTORY_STEPS + 1))
        losses = LossHistory(steps, [1.0 / s for s in steps], [HISTORY_STEPS], [0.5])
        write_loss_history(losses, job / HISTORY_FILE)


@pytest.fixture
def fake_sweep(tmp_path, compose_train):
    """Jobs 0 and 1 differ in beta_T (img_size 8), job 2 in img_size (16), job 3 unfinished.
    Job 2 ran before `loss_history.csv` existed."""
    sweep = tmp_path / "sweep"
    jobs = [
        ("beta_T=0.01", "img_size=8"),
        ("beta_T=0.02", "img_size=8"),
        ("beta_T=0.02", "img_size=16"),
    ]
    for num, overrides in enumerate(jobs):
        cfg = compose_train(*overrides)
        write_job(sweep / str(num), cfg, ["experiment=quickstart", *overrides], history=num < 2)
    write_job(sweep / "3", cfg, ["experiment=quickstart", "beta_T=0.03"], finished=False)
    return sweep


def test_every_row_gets_the_same_noise_labels_and_seed(fake_sweep, monkeypatch, capsys):
    calls = []

    def spy_factory(run):
        sampler = instantiate(run.config["sampler"])

        def spy(net, schedule, x_T, labels, generator, **kwargs):
            calls.append((x_T.clone(), labels.clone(), generator.get_state().clone()))
            return sampler(net, schedule, x_T, labels, generator, **kwargs)

        return spy

    monkeypatch.setattr(TrainedRun, "default_sampler", spy_factory)
    report.main([str(fake_sweep), "--per-class", "2", "--seed", "7"])
    assert len(calls) == 3
    (x0, y0, g0), (x1, y1, g1), (x2, y2, g2) = calls
    assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(g0, g1)
    assert torch.equal(y0, y2) and y0.tolist() == list(range(10)) * 2
    # img_size 16: noise of its own shape, drawn the same way from the same seed.
    assert x0.shape == (20, 1, 8, 8) and x2.shape == (20, 1, 16, 16)
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(x2, torch.randn(x2.shape, generator=generator))
    assert torch.equal(g2, generator.get_state())  # the sampler continues that generator
    assert "skipping" in capsys.readouterr().err  # job 3 is unfinished


def test_writes_grid_loss_overlay_table_and_tensorboard(fake_sweep):
    report.main([str(fake_sweep)])
    for name in ("report_grid.png", "report_loss.png", "report.md"):
        assert (fake_sweep / name).stat().st_size > 0
    table = (fake_sweep / "report.md").read_text()
    # Rows are labelled with the overrides that differ between jobs.
    for label in ("beta_T=0.01 img_size=8", "beta_T=0.02 img_size=8", "beta_T=0.02 img_size=16"):
        assert f"| `{label}` | {HISTORY_STEPS} | 0.5 |" in table
    assert "experiment=quickstart" not in table
    assert list((fake_sweep / "report").glob("events.out.tfevents.*"))
    assert not list(fake_sweep.glob(".*.tmp"))
    # beta_T differs: the losses measure different tasks, and report.md says so.
    assert "**The jobs' noise schedules differ** (beta_T: 0.01, 0.02)" in table
    assert "measure different tasks" in table
    assert "Jobs `beta_T=0.02 img_size=16` ran before `loss_history.csv`" in table
    # No quality/* metrics: no quality columns and no quality figure.
    assert "quality/" not in table and not (fake_sweep / "report_quality.png").exists()


def test_loss_figure_draws_every_step_from_the_history_and_marks_thinned_jobs(fake_sweep):
    jobs = job_dirs(fake_sweep)[:3]
    labels = ["a", "b", "c"]
    figure, thinned = loss_figure(jobs, labels, "title", caveat="")
    assert thinned == ["c"]
    [ax] = figure.axes
    train = {
        line.get_label(): list(line.get_xdata())
        for line in ax.lines
        if "(train" in str(line.get_label())
    }
    assert train["a (train, mean of 1)"] == list(range(1, HISTORY_STEPS + 1))
    assert train["b (train, mean of 1)"] == list(range(1, HISTORY_STEPS + 1))
    # Job 2 has no history file: the event files' every-3rd-step points, marked in the legend.
    assert train[f"c{THINNED} (train, mean of 1)"] == [2, 5, 8, 11]


def test_schedule_caveat_names_what_differs_and_is_empty_for_equal_schedules(compose_train):
    def schedule(*overrides: str) -> dict:
        return OmegaConf.to_container(compose_train(*overrides).module.schedule, resolve=True)

    assert schedule_caveat([schedule(), schedule("img_size=16")]) == ""
    caveat = schedule_caveat([schedule(), schedule("schedule=cosine")])
    assert "schedule: linear_betas, cosine_betas" in caveat
    assert "beta_T: 0.028, (unset)" in caveat
    # Both use the quickstart's T and the same NoiseSchedule class.
    differences = schedule_differences([schedule(), schedule("schedule=cosine")])
    assert [d.split(":")[0] for d in differences] == [
        "schedule",
        "beta_1",
        "beta_T",
        "s",
        "max_beta",
    ]


def test_quality_metrics_become_table_columns_and_a_figure(tmp_path, compose_train):
    sweep = tmp_path / "sweep"
    quality = {
        "0.02": {"quality/fid": 80.0, "quality/kid": 0.05, "quality/precision": 0.4},
        "0.01": {"quality/fid": 120.0, "quality/kid": 0.09, "quality/precision": 0.3},
    }
    for num, beta_T in enumerate(quality):
        overrides = [f"beta_T={beta_T}"]
        write_job(
            sweep / f"{num}_beta_T={beta_T}",
            compose_train(*overrides),
            overrides,
            metrics=quality[beta_T],
        )
    report.main([str(sweep)])
    table = (sweep / "report.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| job |"))
    assert header.startswith("| job | quality/fid | quality/kid | quality/precision | global_step")
    assert "| `beta_T=0.02` | 80 | 0.05 | 0.4 |" in table
    assert "![report_quality](report_quality.png)" in table
    assert (sweep / "report_quality.png").read_bytes()[:4] == b"\x89PNG"
    overrides = [["beta_T=0.02"], ["beta_T=0.01"]]
    figure = quality_figure(overrides, list(quality.values()), "title")
    fid_ax = figure.axes[0]
    assert fid_ax.get_ylabel() == "quality/fid" and fid_ax.get_xlabel() == "beta_T"
    [line] = fid_ax.lines
    assert list(line.get_xdata()) == [0.01, 0.02] and list(line.get_ydata()) == [120.0, 80.0]
    assert [ax.get_ylabel() for ax in figure.axes[1:]] == ["quality/kid", "quality/precision"]


def test_failed_jobs_are_listed_and_left_out(fake_sweep, capsys):
    record = {"job": "3", "overrides": ["beta_T=0.03"], "error": "error: beta_T=0.03: bad"}
    (fake_sweep / "3" / "failure.json").write_text(json.dumps(record))
    report.main([str(fake_sweep)])
    out, err = capsys.readouterr()
    assert "failed: 3 (beta_T=0.03): error: beta_T=0.03: bad" in out.splitlines()
    assert "skipping" not in err  # a failed job is not reported as merely unfinished
    text = (fake_sweep / "report.md").read_text()
    assert text.endswith("## Failed jobs (1)\n\n- `3 (beta_T=0.03): error: beta_T=0.03: bad`\n")
    assert "| `beta_T=0.01 img_size=8` |" in text


def test_a_sweep_whose_jobs_all_failed_is_one_line_after_the_list(tmp_path, compose_train):
    write_job(tmp_path / "0", compose_train(), ["lr=x"], finished=False)
    record = {"job": "0", "overrides": ["lr=x"], "error": "error: lr='x': must be a number"}
    (tmp_path / "0" / "failure.json").write_text(json.dumps(record))
    result = run_report(str(tmp_path))
    assert result.stdout.splitlines() == ["failed: 0 (lr=x): error: lr='x': must be a number"]
    assert one_error_line(result) == f"error: {tmp_path}: all 1 job(s) failed; nothing to report"


def test_row_labels_keep_only_what_differs():
    assert row_labels([["a=1", "b=2"], ["a=1", "b=3"]]) == ["b=2", "b=3"]
    assert row_labels([["a=1"]]) == ["a=1"]
    assert row_labels([[], []]) == ["(defaults)", "(defaults)"]


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffusion_lab.report", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_empty_folder_is_one_line(tmp_path):
    assert "no job folders" in one_error_line(run_report(str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_one_line(tmp_path):
    assert "no such folder" in one_error_line(run_report(str(tmp_path / "nowhere")))


def test_no_finished_job_is_one_line_and_writes_nothing(tmp_path, compose_train):
    cfg = compose_train()
    write_job(tmp_path / "0", cfg, ["beta_T=0.01"], finished=False)
    result = run_report(str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "none of its 1 job(s) has finished" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0"]


def test_unknown_kind_of_sweep_is_one_line(tmp_path, compose_train):
    write_job(tmp_path / "0", compose_train(), ["lr=0.1"], kind="mystery", finished=False)
    line = one_error_line(run_report(str(tmp_path)))
    assert "jobs of mystery; a report exists for train" in line


@pytest.mark.slow
def test_multirun_then_report_on_the_sweep(tmp_path):
    """A two-job sweep as users type it (shrunk) into Hydra's default multirun/DATE/TIME/ of
    the working folder, then `report` on that folder."""
    from tests.test_commands import run_train, shrink_except

    result = run_train(
        "--multirun",
        "beta_T=0.01,0.02",
        "experiment=quickstart",
        *shrink_except("epochs="),
        "epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = (tmp_path / "multirun").glob("*/*")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}", f"{sweep.parent.name}/{sweep.name}")
    jobs = job_dirs(sweep)
    assert [job.name[:2] for job in jobs] == ["0_", "1_"]
    for job in jobs:
        assert (job / "schedule.png").is_file()
        assert (job / FINAL_CKPT).is_file()
        steps = json.loads((job / "metrics.json").read_text())["global_step"]
        history = read_loss_history(job / HISTORY_FILE)
        assert list(history.train_steps) == list(range(1, steps + 1))
    result = run_report(str(sweep), "--per-class", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        result.stdout.strip().splitlines()[-1]
        == f"report: 2 jobs of a train sweep; outputs in {sweep}"
    )
    table = (sweep / "report.md").read_text()
    assert "| `beta_T=0.01` |" in table and "| `beta_T=0.02` |" in table
    assert "noise schedules differ** (beta_T: 0.01, 0.02)" in table
    assert "ran before" not in table  # every job wrote its loss_history.csv
    assert (sweep / "report_grid.png").is_file() and (sweep / "report_loss.png").is_file()
