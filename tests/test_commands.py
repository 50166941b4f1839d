"""The commands users type, run exactly as written (plus shrinking overrides), in process. DDP,
which starts its processes from the command line, runs as users type it in
tests/test_resume_ddp.py; bad input is in tests/test_bad_inputs.py."""

from __future__ import annotations

import json

import pytest

from diffusion_lab.config.folders import JOB_NAME_MAX
from diffusion_lab.reporting import job_dirs
from tests.conftest import TINY_TRAIN_OVERRIDES
from tests.helpers import png_pixels
from tests.test_train import tensorboard_hparam_columns, tensorboard_tags


def shrink_except(*keys: str) -> list[str]:
    """The shrinking overrides without the experiment choice and without `keys`."""
    return [o for o in TINY_TRAIN_OVERRIDES if not o.startswith(("experiment=", *keys))]


@pytest.mark.slow
def test_quickstart_command_runs_and_writes_outputs(run_cli, tmp_path):
    run_dir = tmp_path / "quickstart"
    result = run_cli(
        "train", "experiment=quickstart", *shrink_except(), f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 6
    png_pixels(run_dir / "samples_final.png")
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("train: val/loss ") and summary.endswith(f"outputs in {run_dir}")


@pytest.mark.slow
@pytest.mark.real_data
def test_train_on_real_cifar10_copy(run_cli, cifar10_root, tmp_path):
    run_dir = tmp_path / "cifar"
    result = run_cli(
        "train",
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
def test_multirun_sweep_over_a_top_level_key(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train",
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
