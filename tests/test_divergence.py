"""A diverged run stops at its first bad step, keeps its last good checkpoint and writes no NaN."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from diffusion_lab.jobs.train import train
from diffusion_lab.lit.ddpm import DDPMModule
from diffusion_lab.lit.guard import TrainingDiverged
from tests.conftest import TINY_TRAIN_OVERRIDES

# The tiny run has 3 steps per epoch and writes a checkpoint after each epoch.
EPOCH_1_CKPTS = {"last.ckpt", "step0000003.ckpt"}


def nan_loss_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the loss of optimizer step `step` (1-based) NaN."""
    training_step = DDPMModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = training_step(self, batch, batch_idx)
        return loss * float("nan") if self.global_step + 1 == step else loss

    monkeypatch.setattr(DDPMModule, "training_step", poisoned)


def inf_gradient_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one gradient of optimizer step `step` (1-based) Inf while the loss stays finite."""

    def poisoned(self):
        if self.global_step + 1 == step:
            next(self.parameters()).grad[0].fill_(float("inf"))

    monkeypatch.setattr(DDPMModule, "on_after_backward", poisoned, raising=False)


def assert_all_finite(checkpoint_path: Path) -> None:
    """Every tensor of the averaged and the live weights is finite."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    for part in ("state_dict", "current_model_state"):
        for name, value in checkpoint[part].items():
            assert torch.isfinite(value).all(), f"{checkpoint_path.name} {part}.{name}"


@pytest.mark.parametrize(
    ("poison", "step", "what"),
    [(nan_loss_at, 4, "the loss is nan"), (inf_gradient_at, 5, "a gradient is inf")],
)
def test_first_bad_step_stops_training_and_keeps_the_last_good_checkpoint(
    compose_train, monkeypatch, poison, step, what
):
    poison(step, monkeypatch)
    # Read every 50 steps: the record is read at epoch 2's validation, after step 6.
    cfg = compose_train()
    run = Path(cfg.output_dir)
    last = run / "checkpoints" / "last.ckpt"
    message = f"training diverged at step {step}: {what}; "
    message += f"the last good checkpoint is {last} (step 3)"
    with pytest.raises(TrainingDiverged, match=f"^{re.escape(message)}$"):
        train(cfg)
    assert {p.name for p in (run / "checkpoints").iterdir()} == EPOCH_1_CKPTS
    for name in EPOCH_1_CKPTS:
        assert_all_finite(run / "checkpoints" / name)
    assert not (run / "metrics.json").exists()
    assert not (run / "samples_final.png").exists()


@pytest.mark.slow
def test_diverging_command_exits_2_with_one_line_and_no_checkpoint(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train", *TINY_TRAIN_OVERRIDES, "lr=1e3", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = "error: training diverged at step 3: the loss is nan; this run wrote no checkpoint"
    assert result.stderr.strip().splitlines()[-1] == message
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "metrics.json").exists()
