"""Kill and resume: a run stopped at any step continues exactly, in its own folder and history.

The killed runs are real `python -m diffusion_lab.train` processes. A test callback pauses one
once its last.ckpt holds a chosen step; the test then sends SIGKILL or SIGINT. Losses are read
from the runs' own records (the LossCurve history in last.ckpt, the TensorBoard event files).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffusion_lab.config.folders import resumed_run_dir
from diffusion_lab.config.source import compose_config
from diffusion_lab.data import DigitsDataModule
from diffusion_lab.jobs.fitting import checkpoint_step
from diffusion_lab.jobs.train import train
from diffusion_lab.lit.checkpoint import (
    RunCheckpoint,
    TrainingInterrupted,
    capture_random_state,
    restore_random_state,
)
from tests.conftest import TINY_TRAIN_OVERRIDES
from tests.helpers import start_process

# 2 epochs of 3 steps; dropout and flips so that every random draw of a step is exercised.
RESUME_OVERRIDES = [
    *TINY_TRAIN_OVERRIDES,
    "model.dropout=0.1",
    "data.random_flip=true",
    "callbacks.checkpoint.last_every_n_steps=1",
]
TOTAL_STEPS = 6


class PauseAtStep(pl.Callback):
    """Inside a train subprocess: when step `step` + 1 is about to start and last.ckpt holds
    step `step`, create `marker` and wait while it exists (at most a minute), so the test can
    kill or signal the run there. Everything of step `step` has been logged by then."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        last = Path(trainer.checkpoint_callback.last_model_path or "missing")
        if trainer.global_step != self.step or not last.is_file():
            return
        if checkpoint_step(str(last)) != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + 60
        while self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def start_paused_run(tmp_path: Path, step: int, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """Start `python -m diffusion_lab.train` and return once it is paused at `step`."""
    marker = tmp_path / f"paused_at_{step}"
    log = (tmp_path / f"stderr_{step}.txt").open("w")
    process = start_process(
        "-m",
        "diffusion_lab.train",
        *RESUME_OVERRIDES,
        *overrides,
        "+callbacks.pause._target_=tests.test_resume.PauseAtStep",
        f"+callbacks.pause.step={step}",
        f"+callbacks.pause.marker={marker}",
        cwd=tmp_path,  # a run folder chosen wrongly would land here, not in the repository
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"run never paused at step {step}: {Path(log.name).read_text()[-3000:]}")
        time.sleep(0.05)
    return process, marker


def loss_history(ckpt: Path) -> dict[str, list]:
    """The LossCurve history stored in a checkpoint: per-step training and per-epoch val losses."""
    state = torch.load(ckpt, weights_only=True)
    return next(v for k, v in state["callbacks"].items() if k.startswith("LossCurve"))


def scalar_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every scalar tag over a run folder's event files, purges applied."""
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Path:
    """The run folder of the same training, never interrupted."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(compose_config("train", [*RESUME_OVERRIDES, f"output_dir={run_dir}"]))
    return run_dir


@pytest.mark.slow
def test_killed_twice_and_interrupted_once_a_run_resumes_exactly(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    # SIGKILL mid-epoch (after step 1 of 3); resumed by the command users type, SIGKILL at an
    # epoch's end (step 3, saved after its validation); resumed again, SIGINT as step 5 starts.
    process, _ = start_paused_run(tmp_path, 1, f"hydra.run.dir={run_dir}")
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert checkpoint_step(str(last)) == 1
    process, _ = start_paused_run(tmp_path, 3, f"ckpt_path={last}")
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert checkpoint_step(str(last)) == 3
    process, marker = start_paused_run(tmp_path, 4, f"ckpt_path={last}")
    process.send_signal(signal.SIGINT)
    marker.unlink()  # the run goes on, finishes step 5, saves last.ckpt and stops
    assert process.wait(timeout=120) == 128 + signal.SIGINT
    lines = (tmp_path / "stderr_4.txt").read_text().strip().splitlines()
    assert lines[-1] == f"error: SIGINT at step 5: saved {last}; resume with ckpt_path={last}"
    assert "Traceback" not in "".join(lines)
    assert checkpoint_step(str(last)) == 5
    train(
        compose_config("train", [*RESUME_OVERRIDES, f"ckpt_path={last}", f"output_dir={run_dir}"])
    )

    resumed, reference = loss_history(last), loss_history(uninterrupted / "checkpoints/last.ckpt")
    assert resumed["train_steps"] == list(range(1, TOTAL_STEPS + 1))
    assert resumed["train_losses"] == reference["train_losses"]  # exact: bit-identical floats
    assert resumed["val_steps"] == reference["val_steps"] == [3, 6]
    assert resumed["val_losses"] == reference["val_losses"]
    # One TensorBoard history in the one run folder: every step once, with the unbroken values.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run"]
    events, reference_events = scalar_events(run_dir), scalar_events(uninterrupted)
    assert events.keys() == reference_events.keys()
    for tag, points in events.items():
        steps = [step for step, _ in points]
        assert steps == [step for step, _ in reference_events[tag]], f"{tag}: steps {steps}"
    for tag in ("train/loss", "val/loss", "train/lr"):
        assert events[tag] == reference_events[tag], tag
    assert len(events["train/loss"]) == TOTAL_STEPS
    # Lightning keeps no epoch aggregates in checkpoints: an epoch's mean restarts at a resume.
    assert len(events["train/loss_epoch"]) == 2


class SignalAtStep(pl.Callback):
    """Sends this process `signum` as optimizer step `step` + 1 starts."""

    def __init__(self, step: int, signum: int) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_sigterm_finishes_the_step_saves_last_ckpt_and_stops(compose_train):
    cfg = compose_train(
        "+callbacks.signal._target_=tests.test_resume.SignalAtStep",
        "+callbacks.signal.step=1",
        f"+callbacks.signal.signum={int(signal.SIGTERM)}",
    )
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg)
    assert str(stop.value) == f"SIGTERM at step 2: saved {last}; resume with ckpt_path={last}"
    assert stop.value.exit_status == 128 + signal.SIGTERM
    assert checkpoint_step(str(last)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        # Step 6 ends epoch 2: saved after its validation, once.
        (["last_every_n_steps=2", "last_every_n_minutes=null"], [2, 4, 6]),
        (["last_every_n_minutes=1e-9"], [1, 2, 3, 4, 5, 6]),
        # No interval passes in a short run: last.ckpt is written at the end.
        (["last_every_n_minutes=60"], [6]),
    ],
)
def test_last_ckpt_follows_its_intervals(compose_train, monkeypatch, intervals, expected):
    saves: list[tuple[int, str]] = []
    save = RunCheckpoint._save_checkpoint

    def recording_save(self: RunCheckpoint, trainer: pl.Trainer, filepath: str) -> None:
        saves.append((trainer.global_step, Path(filepath).name))
        save(self, trainer, filepath)

    monkeypatch.setattr(RunCheckpoint, "_save_checkpoint", recording_save)
    overrides = [f"callbacks.checkpoint.{o}" for o in ["every_n_epochs=0", *intervals]]
    train(compose_train(*overrides))
    assert saves == [(step, "last.ckpt") for step in expected]


def test_bad_last_intervals_are_refused():
    for key in ("last_every_n_minutes", "last_every_n_steps"):
        with pytest.raises(ValueError, match=f"{key}=0: must be > 0 or null"):
            RunCheckpoint(**{key: 0})


def test_random_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.save(capture_random_state(), tmp_path / "state.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_random_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_data_order_resumes_mid_epoch_and_at_the_next_epoch():
    data = DigitsDataModule(batch_size=8, img_size=8, channels=1, num_classes=10, val_size=10)
    data.setup("fit")
    torch.manual_seed(5)
    sampler = data.train_dataloader().sampler
    sampler.set_epoch(1)
    epoch_1 = list(sampler)
    sampler.set_epoch(2)
    epoch_2 = list(sampler)
    assert sorted(epoch_1) == list(range(len(data.train_set))) and epoch_1 != epoch_2

    data.load_state_dict({"epoch": 1, "batches_done": 3, "batches_per_epoch": 10, "world_size": 1})
    # The used indices follow at the end: a distributed sampler shards a list of the full length.
    assert list(data.train_dataloader().sampler) == epoch_1[3 * 8 :] + epoch_1[: 3 * 8]
    data.load_state_dict({"epoch": 1, "batches_done": 3, "batches_per_epoch": 10, "world_size": 2})
    assert list(data.train_dataloader().sampler)[:8] == epoch_1[2 * 3 * 8 : 2 * 3 * 8 + 8]
    data.load_state_dict({"epoch": 1, "batches_done": 10, "batches_per_epoch": 10, "world_size": 1})
    assert list(data.train_dataloader().sampler) == epoch_2


def test_a_checkpoint_in_a_runs_checkpoints_folder_resumes_in_that_run():
    assert resumed_run_dir("out/train/d/t/checkpoints/last.ckpt", "new") == "out/train/d/t"
    assert resumed_run_dir("elsewhere/model.ckpt", "new") == "new"
    assert resumed_run_dir(None, "new") == "new"
