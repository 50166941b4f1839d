"""`loss_history.csv`: a run's training loss at every step and its validation losses.

`LossCurve` writes it into the run folder; `report` reads it, because TensorBoard's event files
hold only every `trainer.log_every_n_steps`-th training loss. One row per point, with the
header `split,step,loss`: `train` rows for optimizer steps, `val` rows for validations.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from diffusion_lab.utils.files import atomic_path

HISTORY_FILE = "loss_history.csv"
FIELDS = ("split", "step", "loss")


class LossHistory(NamedTuple):
    """Training loss per optimizer step and validation loss per validation, with their steps."""

    train_steps: Sequence[int]
    train_losses: Sequence[float]
    val_steps: Sequence[int]
    val_losses: Sequence[float]


def write_loss_history(history: LossHistory, path: str | Path) -> None:
    """Write `history` as CSV, atomically; floats keep every digit (`repr`)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerows(("train", s, repr(v)) for s, v in zip(*history[:2], strict=True))
        writer.writerows(("val", s, repr(v)) for s, v in zip(*history[2:], strict=True))


def read_loss_history(path: str | Path) -> LossHistory:
    """The history written by `write_loss_history`."""
    series: dict[str, tuple[list[int], list[float]]] = {"train": ([], []), "val": ([], [])}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            steps, losses = series[row["split"]]
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
    return LossHistory(*series["train"], *series["val"])
