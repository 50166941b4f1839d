"""The commands users type, run as subprocesses exactly as written (plus shrinking overrides)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_lab.config.folders import JOB_NAME_MAX
from diffusion_lab.reporting import job_dirs
from tests.conftest import REPO_ROOT, TINY_TRAIN_OVERRIDES
from tests.test_train import tensorboard_hparam_columns, tensorboard_tags


def shrink_except(*keys: str) -> list[str]:
    """The shrinking overrides without the experiment choice and without `keys`."""
    return [o for o in TINY_TRAIN_OVERRIDES if not o.startswith(("experiment=", *keys))]


def run_train(*overrides: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """`python -m diffusion_lab.train OVERRIDES` with captured output."""
    return subprocess.run(
        [sys.executable, "-m", "diffusion_lab.train", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_quickstart_command_runs_and_writes_outputs(tmp_path):
    run_dir = tmp_path / "quickstart"
    result = run_train(
        "experiment=quickstart", *shrink_except(), f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 6
    assert (run_dir / "samples_final.png").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("train: val/loss ") and summary.endswith(f"outputs in {run_dir}")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("beta_1=0", "error: beta_1=0: must be a number > 0"),
        ("beta_T=1.5", "error: beta_T=1.5: must be a number < 1"),
        ("T=1", "error: T=1: must be an integer >= 2"),
        ("img_size=30", "error: img_size=30: must be a positive multiple of 8"),
        ("batch_size=0", "error: batch_size=0: must be a positive integer"),
    ],
)
def test_bad_config_fails_in_one_line_before_any_work(tmp_path, override, message):
    run_dir = tmp_path / "run"
    result = run_train(override, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not run_dir.exists()  # Hydra's run folder held nothing but its own files: removed


def test_missing_cifar10_offline_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_train(
        f"data.root={missing}", "data.download=false", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(missing) in lines[0] and "data.root=" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_unknown_group_option_is_rejected_by_hydra(tmp_path):
    result = run_train("schedule=nonexistent", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode != 0
    assert "nonexistent" in result.stderr and "schedule" in result.stderr


@pytest.mark.slow
@pytest.mark.real_data
def test_train_on_real_cifar10_copy(cifar10_root, tmp_path):
    run_dir = tmp_path / "cifar"
    result = run_train(
        f"data.root={cifar10_root}",
        "data.download=false",
        "data.verify_checksums=false",  # the development copy is re-packed losslessly
        "trainer=cpu",
        *shrink_except("img_size="),
        "img_size=16",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["val/loss"] > 0
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "CIFAR10DataModule" in config and "channels: 3" in config


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_once(tmp_path):
    """`trainer=ddp` as users type it, on 2 CPU processes (gloo): one run folder, rank 0 writes."""
    run_dir = tmp_path / "ddp"
    result = run_train(
        "experiment=quickstart",
        *shrink_except(),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # limit_train_batches=3 counts batches per process; both processes step together.
    assert metrics["epochs"] == 2 and metrics["global_step"] == 6
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 1
    assert (run_dir / "samples_final.png").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]


@pytest.mark.slow
def test_multirun_sweep_over_a_top_level_key(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        "--multirun",
        "beta_T=0.01,0.02",
        "experiment=quickstart",
        *shrink_except("epochs="),
        "epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(sweep)
    # <job number>_<its overrides, sorted>, capped: T=20 and batch_size=16 sort before beta_T.
    for num, (job, beta_T) in enumerate(zip(jobs, ("0.01", "0.02"), strict=True)):
        assert job.name.startswith(f"{num}_T=20,batch_size=16,beta_T={beta_T},")
        assert len(job.name) == JOB_NAME_MAX
        assert json.loads((job / "metrics.json").read_text())["global_step"] == 3
        assert f"beta_T: {beta_T}\n" in (job / ".hydra" / "config.yaml").read_text()
        tags = tensorboard_tags(job)
        assert not [tag for tag in tags["scalars"] if tag.startswith("final/")]
    # TensorBoard's HParams table opens on the swept key; constants and nulls are left out.
    columns = tensorboard_hparam_columns(sweep)
    assert columns[0] == ("beta_T", True)
    assert not any(differs for _, differs in columns[1:])
    names = {name for name, _ in columns}
    assert {"group/experiment", "model.ch", "lr", "seed"} <= names
    assert not names & {"ckpt_path", "output_dir", "perf.compile"}
