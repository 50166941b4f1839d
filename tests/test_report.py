"""`python -m diffusion_lab.report`: identical noise per row, the files it writes, failed jobs
(its bad input: tests/test_bad_inputs.py).

A fake sweep is built in seconds: tiny untrained DDPMs saved as checkpoints with their run
config, Hydra's `.hydra/` files, metrics.json and a few TensorBoard scalars per job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from diffusion_lab.reporting import FINAL_CKPT, job_dirs, row_labels
from diffusion_lab.reporting.training_sweep import (
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
from diffusion_lab.utils.errors import UserFacingError
from tests.helpers import png_pixels

HISTORY_STEPS = 12


def write_job(
    job: Path,
    cfg,
    overrides: list[str],
    kind: str = "train",
    finished: bool = True,
    metrics: dict | None = None,
):
    """One Hydra job folder as `train` leaves it (or, unfinished, as it is mid-run)."""
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
    steps = list(range(1, HISTORY_STEPS + 1))
    losses = LossHistory(steps, [1.0 / s for s in steps], [HISTORY_STEPS], [0.5])
    write_loss_history(losses, job / HISTORY_FILE)


@pytest.fixture
def fake_sweep(tmp_path, compose_train):
    """Jobs 0 and 1 differ in beta_T (img_size 8), job 2 in img_size (16), job 3 unfinished."""
    sweep = tmp_path / "sweep"
    jobs = [
        ("beta_T=0.01", "img_size=8"),
        ("beta_T=0.02", "img_size=8"),
        ("beta_T=0.02", "img_size=16"),
    ]
    for num, overrides in enumerate(jobs):
        cfg = compose_train(*overrides)
        write_job(
            sweep / str(num),
            cfg,
            ["experiment=quickstart", *overrides],
        )
    write_job(sweep / "3", cfg, ["experiment=quickstart", "beta_T=0.03"], finished=False)
    return sweep


@pytest.mark.slow
def test_every_row_gets_the_same_noise_labels_and_seed(run_cli, fake_sweep, monkeypatch):
    calls = []

    def spy_factory(run):
        sampler = instantiate(run.config["sampler"])

        def spy(net, schedule, x_T, labels, generator, **kwargs):
            calls.append((x_T.clone(), labels.clone(), generator.get_state().clone()))
            return sampler(net, schedule, x_T, labels, generator, **kwargs)

        return spy

    monkeypatch.setattr(TrainedRun, "default_sampler", spy_factory)
    result = run_cli("report", str(fake_sweep), "--per-class", "2", "--seed", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(calls) == 3
    (x0, y0, g0), (x1, y1, g1), (x2, y2, g2) = calls
    assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(g0, g1)
    assert torch.equal(y0, y2) and y0.tolist() == list(range(10)) * 2
    # img_size 16: noise of its own shape, drawn the same way from the same seed.
    assert x0.shape == (20, 1, 8, 8) and x2.shape == (20, 1, 16, 16)
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(x2, torch.randn(x2.shape, generator=generator))
    assert torch.equal(g2, generator.get_state())  # the sampler continues that generator
    assert "skipping" in result.stderr  # job 3 is unfinished


@pytest.mark.slow
def test_writes_grid_loss_overlay_table_and_tensorboard(run_cli, fake_sweep):
    assert run_cli("report", str(fake_sweep)).returncode == 0
    for name in ("report_grid.png", "report_loss.png"):
        png_pixels(fake_sweep / name)
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
    # No quality/* metrics: no quality columns and no quality figure.
    assert "quality/" not in table and not (fake_sweep / "report_quality.png").exists()


def test_loss_figure_draws_every_step_from_the_history(fake_sweep):
    jobs = job_dirs(fake_sweep)[:3]
    labels = ["a", "b", "c"]
    [ax] = loss_figure(jobs, labels, "title", caveat="").axes
    train = {
        line.get_label(): list(line.get_xdata())
        for line in ax.lines
        if "(train" in str(line.get_label())
    }
    assert train["a (train, mean of 1)"] == list(range(1, HISTORY_STEPS + 1))
    assert train["b (train, mean of 1)"] == list(range(1, HISTORY_STEPS + 1))
    assert train["c (train, mean of 1)"] == list(range(1, HISTORY_STEPS + 1))
    (jobs[2] / HISTORY_FILE).unlink()
    with pytest.raises(UserFacingError, match=f"no {HISTORY_FILE}; every finished train job"):
        loss_figure(jobs, labels, "title", caveat="")


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


@pytest.mark.slow
def test_quality_metrics_become_table_columns_and_a_figure(run_cli, tmp_path, compose_train):
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
    assert run_cli("report", str(sweep)).returncode == 0
    table = (sweep / "report.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| job |"))
    assert header.startswith("| job | quality/fid | quality/kid | quality/precision | global_step")
    assert "| `beta_T=0.02` | 80 | 0.05 | 0.4 |" in table
    assert "![report_quality](report_quality.png)" in table
    png_pixels(sweep / "report_quality.png")
    overrides = [["beta_T=0.02"], ["beta_T=0.01"]]
    figure = quality_figure(overrides, list(quality.values()), "title")
    fid_ax = figure.axes[0]
    assert fid_ax.get_ylabel() == "quality/fid" and fid_ax.get_xlabel() == "beta_T"
    [line] = fid_ax.lines
    assert list(line.get_xdata()) == [0.01, 0.02] and list(line.get_ydata()) == [120.0, 80.0]
    assert [ax.get_ylabel() for ax in figure.axes[1:]] == ["quality/kid", "quality/precision"]


@pytest.mark.slow
def test_failed_jobs_are_listed_and_left_out(run_cli, fake_sweep):
    record = {"job": "3", "overrides": ["beta_T=0.03"], "error": "error: beta_T=0.03: bad"}
    (fake_sweep / "3" / "failure.json").write_text(json.dumps(record))
    result = run_cli("report", str(fake_sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "failed: 3 (beta_T=0.03): error: beta_T=0.03: bad" in result.stdout.splitlines()
    assert "skipping" not in result.stderr  # a failed job is not reported as merely unfinished
    text = (fake_sweep / "report.md").read_text()
    assert text.endswith("## Failed jobs (1)\n\n- `3 (beta_T=0.03): error: beta_T=0.03: bad`\n")
    assert "| `beta_T=0.01 img_size=8` |" in text


def test_row_labels_keep_only_what_differs():
    assert row_labels([["a=1", "b=2"], ["a=1", "b=3"]]) == ["b=2", "b=3"]
    assert row_labels([["a=1"]]) == ["a=1"]
    assert row_labels([[], []]) == ["(defaults)", "(defaults)"]


@pytest.mark.slow
def test_multirun_then_report_on_the_sweep(run_cli, tmp_path):
    """A two-job sweep as users type it (shrunk) into Hydra's default multirun/DATE/TIME/ of
    the working folder, then `report` on that folder."""
    from tests.test_commands import shrink_except

    result = run_cli(
        "train",
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
    result = run_cli("report", str(sweep), "--per-class", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        result.stdout.strip().splitlines()[-1]
        == f"report: 2 jobs of a train sweep; outputs in {sweep}"
    )
    table = (sweep / "report.md").read_text()
    assert "| `beta_T=0.01` |" in table and "| `beta_T=0.02` |" in table
    assert "noise schedules differ** (beta_T: 0.01, 0.02)" in table
    assert "ran before" not in table  # every job wrote its loss_history.csv
    png_pixels(sweep / "report_grid.png")
    png_pixels(sweep / "report_loss.png")
