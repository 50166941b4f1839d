"""`python -m diffusion_lab.study` end to end at toy scale: every stage, study.md, a stage that
fails, and a study stopped during training that continues where it stopped."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.feature_standin import save_stand_in

# The quickstart study shrunk to seconds: 8x8 digits, a width-8 UNet, T=20, a 4-step sampler.
TINY_STUDY = [
    "experiment=quickstart",
    "T=20",
    "img_size=8",
    "batch_size=16",
    "epochs=2",
    "model.ch=8",
    "model.attn_resolutions=[4]",
    "trainer.precision=32-true",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "callbacks.sample_grid.per_class=1",
    "callbacks.progress.refresh_rate=0",
    "sampler.steps=4",
    "study.generate.per_class=6",
    "study.generate.batch_size=30",
    "study.classify.seeds=[1,2]",
    # Both recipes as narrow MLPs in float32: the strong one's 2 x 2048 is slow on a CPU.
    "study.classify.overrides="
    "['epochs=2','batch_size=16','model.widths=[32]','trainer.precision=32-true']",
    "study.part3.grids=[beta_T]",
    "study.part3.per_class=4",
    "study.part3.grid_per_class=1",
]


def features(tmp_path: Path) -> str:
    """The study's evaluate settings for the stand-in feature network."""
    weights = save_stand_in(tmp_path / "standin.pt")
    return f"study.evaluate.overrides=['features.weights={weights}','features.dim=16']"


@pytest.fixture
def study(run_cli):
    """study(folder, *overrides) -> (exit status, stderr) of `python -m diffusion_lab.study`
    into `folder`, in this process (a separate one only where a signal must stop it)."""

    def run(folder: Path, *overrides: str) -> tuple[int, str]:
        result = run_cli("study", *overrides, f"hydra.run.dir={folder}", cwd=REPO_ROOT)
        return result.returncode, result.stderr

    return run


def state(folder: Path) -> dict:
    return json.loads((folder / "study_state.json").read_text())["stages"]


@pytest.mark.slow
def test_the_study_runs_every_stage_and_writes_its_report(tmp_path, study):
    folder = tmp_path / "study"
    status, stderr = study(folder, *TINY_STUDY, features(tmp_path))
    assert status == 0, stderr[-3000:]
    stages = state(folder)
    assert list(stages) == sorted(["train", "generate", "evaluate", "classify", "part3"])
    report = (folder / "study.md").read_text()
    # The study's numbers beside ours, with spreads over the 2 seeds of each mode.
    assert "| Part 2: test accuracy, real | 44.05 % (one run) |" in report
    augmented = r"\| Part 2: test accuracy, augmented \| 41\.14 % \(one run\) \| "
    augmented += r"[\d.]+ ± [\d.]+ % \(n=2\)"
    assert re.search(augmented, report)
    fid = stages["evaluate"]["metrics"]["quality/fid"]
    assert f"| FID | {fid:.2f} |" in report
    assert stages["generate"]["images"] == 60
    # Every figure the report links exists.
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"train/loss_curve.png", "generated/contact_sheet.png"} <= set(linked)
    assert any("part3_beta_T_grid" in p for p in linked)
    assert any("part3_schedule_loss" in p for p in linked)
    for path in linked:
        assert (folder / path).is_file(), path
    # Part 3's runs train exactly as many steps as Part 1.
    steps = stages["train"]["steps"]
    assert {run["metrics"]["global_step"] for run in stages["part3"]["runs"].values()} == {steps}

    # A rerun of the same command finds every stage finished and only rewrites the report.
    status, stderr = study(folder, *TINY_STUDY, features(tmp_path))
    assert status == 0, stderr[-3000:]
    assert state(folder) == stages


@pytest.mark.slow
def test_a_failing_stage_stops_in_one_line_and_the_rerun_continues_there(tmp_path, study):
    folder = tmp_path / "study"
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a TorchScript archive")
    overrides = [
        *TINY_STUDY,
        "study.stages=[train,generate,evaluate]",
        f"study.evaluate.overrides=['features.weights={weights}','features.dim=16']",
    ]
    status, stderr = study(folder, *overrides)
    assert status == 2
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: study stage evaluate: features.weights=")
    assert "Traceback" not in stderr
    assert set(state(folder)) == {"train", "generate"}
    trained = (folder / "train" / "metrics.json").stat().st_mtime_ns

    save_stand_in(weights)
    status, stderr = study(folder, *overrides)
    assert status == 0, stderr[-3000:]
    assert set(state(folder)) == {"train", "generate", "evaluate"}
    assert (folder / "train" / "metrics.json").stat().st_mtime_ns == trained


@pytest.mark.slow
def test_a_study_stopped_during_training_resumes_from_last_ckpt(tmp_path, study):
    folder, marker = tmp_path / "study", tmp_path / "paused"
    overrides = [
        *TINY_STUDY,
        "study.stages=[train,generate]",
        "callbacks.checkpoint.last_every_n_steps=2",
        # Waits as step 3 starts (last.ckpt holds step 2) until the test has sent its signal.
        "+callbacks.pause._target_=tests.test_resume.PauseAtStep",
        "+callbacks.pause.step=2",
        f"+callbacks.pause.marker={marker}",
    ]
    command = [sys.executable, "-m", "diffusion_lab.study", *overrides, f"hydra.run.dir={folder}"]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while not marker.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    marker.unlink()  # the run finishes step 3, saves last.ckpt and stops
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "error: study stage train: SIGTERM at step 3" in stderr
    assert not (folder / "study_state.json").is_file() or "train" not in state(folder)

    status, stderr = study(folder, *overrides)
    assert status == 0, stderr[-3000:]
    log = (folder / "study.log").read_text()
    last = folder / "train" / "checkpoints" / "last.ckpt"
    assert f"resuming {folder / 'train'} from {last}" in log
    assert state(folder)["train"]["steps"] == 2 * 3  # epochs=2 of 3 steps
