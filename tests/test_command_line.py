"""The checks before Hydra runs a command (cli/entry_points.py hydra_main, cli/overrides.py) and
before evaluate works (scoring/memory.py): what passes them, what Hydra's own flags still do, the
numbers of a memory refusal. The refusals themselves are rows of tests/test_bad_inputs.py."""

from __future__ import annotations

import pytest

from diffusion_lab.cli.overrides import check_command_line
from diffusion_lab.config.source import config_source
from diffusion_lab.jobs.train import validate_train_run
from diffusion_lab.scoring import memory
from diffusion_lab.scoring.memory import EvaluationSize, check_memory
from diffusion_lab.utils.errors import ConfigError, DataError


def test_cfg_and_help_still_go_to_hydra(run_cli, tmp_path):
    shown = run_cli("train", "--cfg", "job", "T=7", "trainer=cpu", cwd=tmp_path)
    assert shown.returncode == 0 and "\nT: 7\n" in f"\n{shown.stdout}"
    assert "accelerator: cpu" in shown.stdout
    helped = run_cli("train", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "trainer: cpu, ddp, default, gpu" in helped.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "overrides",
    [
        ["T=5,6", "trainer=cpu,default"],
        ["schedule=glob(*)", "lr=1e-4,2e-4"],
        ["hydra/launcher=basic", "seed=range(0,3)"],
        ["experiment=part3_beta_T"],
    ],
)
def test_a_good_sweep_passes_the_check(overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with config_source():
        check_command_line("train", overrides, multirun=True)
    assert list(tmp_path.iterdir()) == []  # the write test leaves nothing


def test_a_single_run_meets_its_commands_check_before_hydra_and_a_sweep_does_not(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    seen = []

    def check(cfg):
        seen.append((cfg.lr, "hydra" in cfg, cfg.output_dir))
        validate_train_run(cfg)

    with config_source(), pytest.raises(ConfigError, match=r"^lr=-1.0: must be a number > 0$"):
        check_command_line("train", ["lr=-1", "hydra.run.dir=run"], multirun=False, check=check)
    # The task's view: no hydra node, and output_dir is the folder Hydra would make for it.
    assert seen == [(-1.0, False, str(tmp_path / "run"))]
    with config_source():  # each job of a sweep checks its own values (and records a refusal)
        check_command_line("train", ["lr=-1,0.1"], multirun=True, check=check)
    assert len(seen) == 1 and list(tmp_path.iterdir()) == []


def size(**changes: int) -> EvaluationSize:
    base = dict(
        num_generated=50_000,
        to_sample=50_000,
        num_reference=50_000,
        channels=3,
        img_size=32,
        feature_dim=2048,
        feature_batch=50,
        feature_input=299,
        kid_subset=1000,
    )
    return EvaluationSize(**{**base, **changes})


def test_the_estimate_grows_with_what_evaluate_holds():
    paper = size().bytes_needed()
    # 50k + 50k features of 2048 floats (plus the joined copy and the precision/recall subset)
    # dominate: at least 1.2 GB, and no more than a few GB with the images and temporaries.
    assert 1.2e9 < paper < 3e9
    assert size(num_generated=100_000, to_sample=100_000).bytes_needed() > paper
    assert size(to_sample=0).bytes_needed() < paper  # a set already read
    assert size(kid_subset=5000).bytes_needed() > paper


def test_a_request_larger_than_the_memory_is_refused_with_the_numbers(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 4 * 1024**3)
    check_memory(size(), "per_class", 5000)
    with pytest.raises(DataError) as info:
        check_memory(size(num_generated=500_000, to_sample=500_000), "per_class", 50_000)
    message = str(info.value)
    assert message.startswith("per_class=50000: evaluate needs about ")
    assert "(500000 generated and 50000 reference images of 3x32x32, their 2048-d features" in (
        message
    )
    assert "but only 4.0 GiB is available" in message and "\n" not in message


def test_unknown_available_memory_refuses_nothing(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    check_memory(size(num_generated=10**12, to_sample=10**12), "per_class", 10**11)


def test_available_memory_is_read_from_the_kernel():
    available = memory.available_memory()
    assert available is not None and 0 < available < 2**50
