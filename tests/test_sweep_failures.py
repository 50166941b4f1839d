"""Sweeps: a failing job is recorded and the others run; the sweep ends non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from diffusion_lab.cli.sweep_failures import JOB_FAILURE_FILE, SWEEP_FAILURES_FILE, SweepFailures
from diffusion_lab.cli.user_errors import report_user_errors
from diffusion_lab.config.source import config_source
from diffusion_lab.data.generated import read_generated_set
from diffusion_lab.reporting import job_dirs
from diffusion_lab.utils.errors import ConfigError
from tests.test_generate import SMALL, save_tiny_checkpoint


@pytest.fixture
def sweep_job(tmp_path):
    """The train config of job 0_lr=x of a sweep in tmp_path/sweep, set as HydraConfig the way
    the launcher sets it."""
    with config_source():
        cfg = compose("train", ["lr=0.5"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "0_lr=x")
    (tmp_path / "sweep" / "0_lr=x" / ".hydra").mkdir(parents=True)
    HydraConfig.instance().set_config(cfg)
    yield cfg
    HydraConfig.instance().cfg = None


def fails_with(err: Exception):
    @report_user_errors
    def task() -> None:
        raise err

    return task


def test_a_user_error_in_a_sweep_job_is_recorded_and_the_sweep_ends_with_2(sweep_job, capsys):
    assert fails_with(ConfigError("lr='x': must be a number"))() is None  # no exit: next job
    assert capsys.readouterr().err == "error: lr='x': must be a number\n"
    job = sweep_job.hydra.runtime.output_dir
    record = json.loads((Path(job) / JOB_FAILURE_FILE).read_text())
    assert record == {
        "job": "0_lr=x",
        "overrides": ["lr=0.5"],
        "error": "error: lr='x': must be a number",
        "user_error": True,
    }
    with pytest.raises(SystemExit) as info:
        SweepFailures().on_multirun_end(config=sweep_job)
    assert info.value.code == 2
    sweep = sweep_job.hydra.sweep.dir
    summary = json.loads((Path(sweep) / SWEEP_FAILURES_FILE).read_text())
    assert summary == {"jobs": 1, "failed": [record]}
    assert capsys.readouterr().err == (
        f"error: 1 of 1 sweep jobs failed; see {sweep}/{SWEEP_FAILURES_FILE}\n"
    )


def test_a_bug_in_a_sweep_job_keeps_its_traceback_and_the_sweep_ends_with_1(sweep_job, capsys):
    fails_with(ZeroDivisionError("division by zero"))()
    assert "Traceback" in capsys.readouterr().err  # a bug needs its traceback
    job = sweep_job.hydra.runtime.output_dir
    record = json.loads((Path(job) / JOB_FAILURE_FILE).read_text())
    assert record["error"] == "ZeroDivisionError: division by zero"
    assert record["user_error"] is False
    with pytest.raises(SystemExit) as info:
        SweepFailures().on_multirun_end(config=sweep_job)
    assert info.value.code == 1


def test_a_sweep_without_failures_ends_normally(sweep_job):
    SweepFailures().on_multirun_end(config=sweep_job)
    assert not (Path(sweep_job.hydra.sweep.dir) / SWEEP_FAILURES_FILE).exists()


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(run_cli, tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt" / "tiny.ckpt")
    sweep = tmp_path / "sweep"
    overrides = [f"ckpt={ckpt}", "per_class=0,3", *SMALL[1:], f"hydra.sweep.dir={sweep}"]
    result = run_cli("generate", "--multirun", *overrides, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    failed, done = job_dirs(sweep)
    assert failed.name.startswith("0_") and done.name.startswith("1_")
    lines = result.stderr.strip().splitlines()
    assert "error: per_class=0: must be a positive integer" in lines
    assert lines[-1] == (
        f"error: 1 of 2 sweep jobs failed ({failed.name}); see {sweep / SWEEP_FAILURES_FILE}"
    )
    [record] = json.loads((sweep / SWEEP_FAILURES_FILE).read_text())["failed"]
    assert "per_class=0" in record["overrides"] and record["job"] == failed.name
    assert len(read_generated_set(done / "set").labels) == 30  # the next job ran to the end
