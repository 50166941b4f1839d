"""TensorBoard logging of a run into one event file, and the step its scalars are logged at."""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only


class RunTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, without the `epoch` scalar, and the end of `fit` flushes
    its event file, not closes it.

    A closed SummaryWriter opens a new event file at its next write, so `classify`'s test phase
    and every run's HParams entry, written after `fit`, each made one more file per run.
    The entry points call `close()` once the run has written everything.
    """

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Lightning's, without the `epoch` scalar Lightning adds to every logged step: it
        would be the dashboard's first card (see tracking.tags), and the per-epoch curves have
        tags of their own (`val_by_epoch/*`)."""
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()
        else:
            self.close()

    @rank_zero_only
    def close(self) -> None:
        """Flush and close the event file (a later write would open a new one)."""
        if self._experiment is not None:
            self.experiment.close()


def scalar_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs the latest scalars at, for images and figures beside them.

    Lightning logs a training step's scalars at its 0-based index, global_step - 1 once the
    optimizer has stepped, and a validation's at the index of the step before it.
    """
    return max(trainer.global_step - 1, 0)
