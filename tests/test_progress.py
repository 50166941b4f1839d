"""Training progress off a terminal: log lines per interval, no bar frames or cursor codes."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from diffusion_lab.lit import progress_bar
from diffusion_lab.lit.progress_bar import RunProgressBar, RunProgressLog, run_progress_bar
from diffusion_lab.utils import progress


class Regression(pl.LightningModule):
    """y = 2x, learned by one linear layer: a Lightning run of a few steps."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(callback: pl.Callback, epochs: int = 2) -> None:
    x = torch.linspace(-1, 1, 12).unsqueeze(1)
    loader = DataLoader(TensorDataset(x, 2 * x), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False
    )
    trainer.fit(Regression(), loader)


def test_off_a_terminal_training_logs_a_line_per_interval_and_one_at_the_end(caplog, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # every step is an interval
    caplog.set_level(logging.INFO, logger=progress_bar.__name__)
    fit(RunProgressLog())
    lines = [r.getMessage() for r in caplog.records if r.name == progress_bar.__name__]
    assert len(lines) == 2 * 3 + 1  # 3 steps an epoch, and the end
    assert lines[0].startswith("epoch 1/2, step 1/6 (17 %), train/loss ")
    assert "ETA" in lines[0] and "elapsed" in lines[0]
    assert lines[-1].startswith("epoch 2/2, step 6/6 (100 %), ")
    assert not any("\r" in line or "\x1b" in line or "v_num" in line for line in lines)


def test_the_interval_spaces_the_lines(caplog, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 3600.0)
    caplog.set_level(logging.INFO, logger=progress_bar.__name__)
    fit(RunProgressLog())
    lines = [r.getMessage() for r in caplog.records if r.name == progress_bar.__name__]
    assert len(lines) == 1 and lines[0].startswith("epoch 2/2, step 6/6 (100 %)")


@pytest.mark.parametrize(
    ("tty", "refresh_rate", "kind", "enabled"),
    [
        (True, 10, RunProgressBar, True),
        (False, 10, RunProgressLog, True),
        (False, 0, RunProgressLog, False),
    ],
)
def test_the_bar_on_a_terminal_the_log_elsewhere(monkeypatch, tty, refresh_rate, kind, enabled):
    stdout = io.StringIO()
    monkeypatch.setattr(stdout, "isatty", lambda: tty)
    monkeypatch.setattr(sys, "stdout", stdout)
    callback = run_progress_bar(refresh_rate)
    assert type(callback) is kind and callback.is_enabled is enabled
