"""hparams_search=: train's objective, the resumable Optuna search (killed and resumed) and its
report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffusion_lab.jobs.train import objective
from diffusion_lab.utils.errors import ConfigError
from hydra_plugins.diffusion_lab_search import import_optuna
from tests.conftest import REPO_ROOT, TINY_TRAIN_OVERRIDES
from tests.helpers import png_pixels

optuna = pytest.importorskip("optuna", reason="the search extra is not installed")

# A 3-trial search of the tiny config on val/loss (no FID weights needed).
SEARCH = [
    "--multirun",
    "hparams_search=part3_betas",
    *TINY_TRAIN_OVERRIDES,
    "optimized_metric=val/loss",
    "callbacks.fid.every_n_epochs=0",
    "hydra.sweeper.n_trials=3",
]


def test_objective_is_the_named_metric_or_one_line_naming_what_was_logged():
    metrics = {"val/loss": 0.5, "train/loss": 0.7, "global_step": 6}
    assert objective(metrics, "val/loss") == 0.5
    assert objective(metrics, None) is None
    with pytest.raises(ConfigError) as err:
        objective(metrics, "quality/fid_100samples_biased")
    assert str(err.value) == (
        "optimized_metric='quality/fid_100samples_biased': the run never logged it; "
        "it logged global_step, train/loss, val/loss"
    )


@pytest.mark.parametrize(
    ("module", "package"),
    [("optuna", "optuna"), ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper")],
)
def test_without_the_search_extra_a_search_stops_in_one_line(module, package, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails
    with pytest.raises(SystemExit) as exit_:
        import_optuna()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: hparams_search needs the package {package}, which is not installed: "
        'pip install -e ".[search]"\n'
    )


@pytest.mark.slow
def test_an_objective_never_logged_fails_in_one_line_after_the_run(tmp_path, run_cli):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train", *TINY_TRAIN_OVERRIDES, "optimized_metric=val/bogus", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: optimized_metric='val/bogus': the run never logged it; ")
    assert "val/loss" in line and "train/loss_epoch" in line
    assert "val/loss" in json.loads((run_dir / "metrics.json").read_text())  # the run is kept


def start_search(sweep_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "diffusion_lab.train", *SEARCH, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when_trial_starts(process: subprocess.Popen, sweep_dir: Path, number: int) -> None:
    """SIGKILL the search as soon as trial `number`'s job folder exists (it is then running)."""
    deadline = time.monotonic() + 300
    while not list(sweep_dir.glob(f"{number}_*/.hydra")):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the search did not reach trial 1"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def trials(sweep_dir: Path) -> list:
    study = optuna.load_study(study_name="part3_betas", storage=f"sqlite:///{sweep_dir}/optuna.db")
    return study.trials


@pytest.mark.slow
def test_a_killed_search_resumes_without_redoing_finished_trials(tmp_path, run_cli):
    sweep_dir = tmp_path / "search"
    kill_when_trial_starts(start_search(sweep_dir), sweep_dir, 1)
    # Killed as it started, before Hydra recorded its config (a later kill leaves it; the
    # report's row for the trial is then the same but for its setting).
    for recorded in sweep_dir.glob("1_*/.hydra/*.yaml"):
        recorded.unlink()
    before = trials(sweep_dir)
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    # The first trial runs the config's own setting (conf/train.yaml: beta_1, beta_T).
    assert before[0].params == {"beta_1": 1.0e-4, "beta_T": 0.028}

    resumed = start_search(sweep_dir)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]

    after = trials(sweep_dir)
    states = [t.state.name for t in after]
    assert states.count("COMPLETE") == 3, states
    assert states[:2] == ["COMPLETE", "FAIL"]  # the killed trial is marked failed...
    assert after[2].params == before[1].params  # ...and its setting runs first on resume
    assert (after[0].params, after[0].value) == (before[0].params, before[0].value)
    assert after[3].params not in (after[0].params, after[1].params)  # a fresh draw, no repeat
    # Job folders carry the trial numbers: they continue after the kill instead of restarting.
    jobs = [p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    numbers = sorted(int(name.split("_", 1)[0]) for name in jobs)
    assert numbers == [0, 1, 2, 3]
    for trial in after:
        if trial.state.name == "COMPLETE":
            (job,) = sweep_dir.glob(f"{trial.number}_*")
            metrics = json.loads((job / "metrics.json").read_text())
            assert metrics["val/loss"] == pytest.approx(trial.value)

    report = run_cli("report", str(sweep_dir), "--per-class", "1")
    assert report.returncode == 0, report.stderr[-3000:]
    for name in ("search_history.png", "search_slices.png", "search_best_vs_defaults.png"):
        png_pixels(sweep_dir / name)
    text = (sweep_dir / "report.md").read_text()
    completed = [t for t in after if t.state.name == "COMPLETE"]
    best = min(completed, key=lambda t: t.value)
    assert f"**Best: trial {best.number}**" in text
    assert "| 0 | 0.0001 | 0.028 |" in text and "| 1 | ? | ? | unfinished |" in text
