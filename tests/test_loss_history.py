"""`loss_history.csv`: the round trip, and a short run writing every step's loss into it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion_lab.jobs.train import train
from diffusion_lab.tracking.loss_history import (
    HISTORY_FILE,
    LossHistory,
    read_loss_history,
    write_loss_history,
)


def test_round_trip_keeps_every_point_and_digit(tmp_path):
    history = LossHistory([1, 2, 3], [0.1, 1 / 3, 2.5e-7], [3], [float(torch.tensor(0.7))])
    write_loss_history(history, tmp_path / HISTORY_FILE)
    assert read_loss_history(tmp_path / HISTORY_FILE) == history
    header = (tmp_path / HISTORY_FILE).read_text().splitlines()[0]
    assert header == "split,step,loss"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_short_run_writes_every_steps_loss(compose_train):
    cfg = compose_train()
    metrics = train(cfg)
    run = Path(cfg.output_dir)
    history = read_loss_history(run / HISTORY_FILE)
    assert list(history.train_steps) == list(range(1, metrics["global_step"] + 1))
    assert list(history.val_steps) == [3, 6]
    # The same numbers as the callback's checkpointed state, which a resumed run continues.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("LossCurve"))
    assert list(history.train_losses) == state["train_losses"]
    assert list(history.val_losses) == state["val_losses"]
