"""Kill and resume across processes: `trainer=ddp` with 2 CPU processes (gloo), killed mid-epoch
as a whole (SIGKILL to every process, as a preempted job), resumed by the command users type,
ends with the losses and weights of an uninterrupted 2-process run.

Rank 0's losses come from the LossCurve history in last.ckpt; the final weights and optimizer
moments (made by both ranks' gradients) from the same file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusion_lab.jobs.fitting import checkpoint_step
from diffusion_lab.lit.checkpoint import RandomState
from tests.conftest import REPO_ROOT
from tests.helpers import png_pixels
from tests.test_resume import RESUME_OVERRIDES, loss_history

DDP_OVERRIDES = [
    *RESUME_OVERRIDES,
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    # One epoch of 3 steps: the processes' start-up is most of this test's time.
    "epochs=1",
]
STEPS = 3
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    "OMP_NUM_THREADS": "1",
}


def train_command(tmp_path: Path, name: str, *overrides: str) -> subprocess.Popen:
    """`python -m diffusion_lab.train` with DDP_OVERRIDES in its own process group."""
    log = (tmp_path / f"{name}.txt").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "diffusion_lab.train", *DDP_OVERRIDES, *overrides],
        cwd=tmp_path,
        env=ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the rank Lightning starts joins this group
    )


def finished(process: subprocess.Popen, tmp_path: Path, name: str) -> None:
    """Wait for a run and fail with its output unless it succeeded."""
    status = process.wait(timeout=300)
    assert status == 0, (tmp_path / f"{name}.txt").read_text()[-3000:]


def tensors(node: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint entry, by its path."""
    if torch.is_tensor(node):
        return {prefix: node}
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return {}
    found = {}
    for key, value in items:
        found.update(tensors(value, f"{prefix}/{key}"))
    return found


def trained_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """The weights (EMA) and optimizer moments a checkpoint holds: both ranks' gradients made
    them."""
    state = torch.load(ckpt, weights_only=True)
    return tensors({"weights": state["state_dict"], "optimizer": state["optimizer_states"]})


@pytest.mark.slow
def test_two_processes_killed_mid_epoch_resume_exactly(tmp_path):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference = train_command(tmp_path, "reference", f"hydra.run.dir={reference_dir}")
    finished(reference, tmp_path, "reference")
    # `trainer=ddp` as users type it (Lightning starts rank 1 by running the command line
    # again): one run folder, written by rank 0 alone.
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["reference"]
    metrics = json.loads((reference_dir / "metrics.json").read_text())
    # limit_train_batches counts batches per process; both processes step together.
    assert metrics["epochs"] == 1 and metrics["global_step"] == STEPS
    assert len(list(reference_dir.glob("events.out.tfevents.*"))) == 1
    png_pixels(reference_dir / "samples_final.png")
    # Paused after step 1 of epoch 0 (3 steps an epoch) with last.ckpt at step 1, then killed.
    marker = tmp_path / "paused"
    pause = [
        "+callbacks.pause._target_=tests.test_resume.PauseAtStep",
        "+callbacks.pause.step=1",
        f"+callbacks.pause.marker={marker}",
    ]
    killed = train_command(tmp_path, "killed", f"hydra.run.dir={run_dir}", *pause)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert killed.poll() is None and time.monotonic() < deadline, (
            tmp_path / "killed.txt"
        ).read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    last = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint_step(str(last)) == 1
    resumed = train_command(tmp_path, "resumed", f"ckpt_path={last}")
    finished(resumed, tmp_path, "resumed")

    done, expected = loss_history(last), loss_history(reference_dir / "checkpoints/last.ckpt")
    assert done["train_steps"] == list(range(1, STEPS + 1))
    assert done["train_losses"] == expected["train_losses"]  # bit-identical floats
    assert done["val_losses"] == expected["val_losses"]
    final = trained_state(last)
    reference_final = trained_state(reference_dir / "checkpoints/last.ckpt")
    assert final.keys() == reference_final.keys() and len(final) > 10
    for key, value in final.items():
        assert torch.equal(value, reference_final[key]), key


class Process:
    """What RandomState reads of a trainer: the process count and this process's rank."""

    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank = world_size, global_rank
        self.is_global_zero = global_rank == 0


def saved_states(*seeds: int) -> tuple[dict, list[torch.Tensor]]:
    """A RandomState checkpoint entry of one process per seed, and each one's next draw."""
    states, draws = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        states.append(RandomState().state_dict()["ranks"][0])
        draws.append(torch.rand(3))
    return {"ranks": states}, draws


def test_each_process_gets_its_own_random_state_back(caplog):
    saved, draws = saved_states(11, 12)
    callback = RandomState()
    callback.load_state_dict(saved)
    callback.on_train_start(Process(2, 1), None)
    assert torch.equal(torch.rand(3), draws[1])
    assert not caplog.records


def test_a_resume_with_another_process_count_says_so_in_one_line(caplog):
    saved, draws = saved_states(11)
    caplog.set_level(logging.WARNING)
    for rank in (0, 1):
        callback = RandomState()
        callback.load_state_dict(saved)
        callback.on_train_start(Process(2, rank), None)
        assert torch.equal(torch.rand(3), draws[0])
    assert [r.getMessage() for r in caplog.records] == [
        "resuming a run of 1 process(es) with 2: the data order continues where it stopped, "
        "but the steps are not those of an uninterrupted run of either size (another global "
        "batch, other random streams per process)"
    ]
