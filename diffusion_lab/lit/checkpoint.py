"""Checkpoints: written atomically, `last.ckpt` kept fresh, and the random state carried over.

Reading them back: `diffusion_lab.runs.checkpoints`.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from diffusion_lab.utils.errors import UserFacingError
from diffusion_lab.utils.files import atomic_path

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target under a temporary name, then renames it.

    Lightning's own writer stages the file in the system temp folder and moves it, which is a
    plain copy (not atomic) when that folder is on another filesystem. Local paths only.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        # Through a file object: torch.save names the zip records after a path it is given, and
        # the temporary name differs per process, so equal checkpoints get equal bytes.
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            torch.save(checkpoint, f)


class TrainingInterrupted(UserFacingError):
    """SIGINT or SIGTERM stopped training after a step; `last.ckpt` holds that step."""

    # The shell's status for a process ended by a signal: 128 + the signal number.
    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + signum


def stop_message(signal_name: str, step: int, path: str) -> str:
    """One line: which signal stopped training at which step, and where last.ckpt lies."""
    saved = f"saved {path}; resume with ckpt_path={path}" if path else "no checkpoint saved"
    return f"{signal_name} at step {step}: {saved}"


def sigterm_stop(trainer: pl.Trainer) -> TrainingInterrupted:
    """Lightning's own stop on SIGTERM (a SystemExit with status 0) as a one-line error."""
    saver = trainer.checkpoint_callback
    path = saver.last_model_path if isinstance(saver, ModelCheckpoint) else ""
    return TrainingInterrupted(stop_message("SIGTERM", trainer.global_step, path), signal.SIGTERM)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus `last.ckpt` on a time or step interval and on a stop.

    The kept checkpoints follow ModelCheckpoint's own settings (`every_n_epochs`, `save_top_k`).
    Lightning's `train_time_interval` and `every_n_train_steps` would also decide the kept
    files and exclude `every_n_epochs`, so `last.ckpt` has its own triggers here: every
    `last_every_n_minutes` of training, every `last_every_n_steps` optimizer steps, at the end
    of training, and after the step during which SIGINT (Ctrl-C) or SIGTERM arrived; training
    then stops with TrainingInterrupted naming the file. A second Ctrl-C stops at once, unsaved.
    Every save is at the end of a step (after the validation at an epoch's end), the state from
    which a resume continues exactly.
    """

    def __init__(
        self,
        last_every_n_minutes: float | None = 5.0,
        last_every_n_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        for key, value in (("minutes", last_every_n_minutes), ("steps", last_every_n_steps)):
            if value is not None and value <= 0:
                raise ValueError(f"last_every_n_{key}={value}: must be > 0 or null")
        super().__init__(**kwargs)
        self.last_every_n_minutes = last_every_n_minutes
        self.last_every_n_steps = last_every_n_steps
        self._last_saved_at = time.monotonic()
        self._sigint_received = False
        # The signal whose stop is due once the step saved for it has been logged.
        self._stopping: int | None = None
        self._previous_sigint: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_saved_at = time.monotonic()
        self._sigint_received, self._stopping = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._sigint_received:  # the second Ctrl-C: stop now, without saving
            self._restore_sigint()
            raise KeyboardInterrupt
        self._sigint_received = True
        print("\nCtrl-C: stopping after this step and saving last.ckpt", flush=True)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # After an epoch's last step comes its validation: save after that, in on_train_epoch_end
        # (Lightning would skip the validation when resuming from a save made before it).
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save_or_stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_or_stop(trainer)

    def _save_or_stop(self, trainer: pl.Trainer) -> None:
        """Write last.ckpt when an interval has passed or a stop was asked for."""
        signum = self._requested_stop(trainer)
        if signum is not None or self._last_due(trainer):
            self.write_last(trainer)
        if signum is not None:
            self._stopping = signum

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The stop comes here, a step after its save, once that step's metrics are logged.
        # (Lightning itself stops on SIGTERM there, and `fitting` reports it the same way.)
        if self._stopping is not None:
            name = signal.Signals(self._stopping).name
            message = stop_message(name, trainer.global_step, self.last_model_path)
            raise TrainingInterrupted(message, self._stopping)

    def _requested_stop(self, trainer: pl.Trainer) -> int | None:
        """The signal that asked training to stop, agreed on by every process (None: go on)."""
        signum = signal.SIGTERM if trainer.received_sigterm else None
        if signum is None and self._sigint_received:
            signum = signal.SIGINT
        if trainer.world_size > 1:  # every rank stops after the same step
            stop = trainer.strategy.reduce_boolean_decision(signum is not None, all=False)
            signum = (signum or signal.SIGINT) if stop else None
        return signum

    def _last_due(self, trainer: pl.Trainer) -> bool:
        """Whether an interval for last.ckpt has passed (rank 0's clock decides for all)."""
        by_steps = self.last_every_n_steps and trainer.global_step % self.last_every_n_steps == 0
        minutes = self.last_every_n_minutes
        by_time = minutes is not None and time.monotonic() - self._last_saved_at >= 60 * minutes
        return bool(by_steps) or trainer.strategy.broadcast(by_time)

    def write_last(self, trainer: pl.Trainer) -> None:
        """Write last.ckpt for the current step, unless this step is saved already."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        # Every write of last.ckpt (also beside a kept checkpoint) restarts the time interval.
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_saved_at = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()
        if self.save_last:
            self.write_last(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Save last.ckpt on Lightning's SIGTERM stop (raised between steps or in validation).

        Other errors (a divergence, a crash, a second Ctrl-C) may strike inside a step, so the
        last periodic checkpoint is kept instead.
        """
        self._restore_sigint()
        if isinstance(exception, SIGTERMException) and not trainer.sanity_checking:
            self.write_last(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_sigint()


def capture_random_state() -> dict[str, Any]:
    """The global generators' states: torch CPU and CUDA, numpy, Python (weights_only-loadable)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "key": numpy_state["state"]["key"].tolist(),
            "pos": numpy_state["state"]["pos"],
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        },
        "python": random.getstate(),
    }


def restore_random_state(state: dict[str, Any]) -> None:
    """Put back what capture_random_state returned (CUDA where this machine has as many GPUs)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    key = np.array(numpy_state["key"], dtype=np.uint32)
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": key, "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def gather_states(trainer: pl.Trainer | None) -> list[dict[str, Any]]:
    """Every process's capture_random_state, in rank order (one entry without a process group).

    Lightning asks every rank for the callbacks' state when it saves a checkpoint (and only
    rank 0 writes it), so the gather meets every rank there.
    """
    state = capture_random_state()
    if trainer is None or trainer.world_size == 1 or not torch.distributed.is_initialized():
        return [state]
    states: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(states, state)
    return states


class RandomState(pl.Callback):
    """Carries the global random generators across a resume, so its losses match an unbroken run.

    The training noise (timesteps, eps, label dropout, dropout, flips and crops) comes from the
    global generators. Every process's state goes into every checkpoint, and each process gets
    its own back when training starts again, after the sanity check and the data loaders are
    built; nothing else draws from them between two training steps (the loaders and validation
    use their own generators). A run resumed with another number of processes cannot continue
    exactly (other batches per step, other generators per process): it says so in one line and
    goes on, each process taking the state of rank (its rank modulo the saved count).
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._to_restore: list[dict[str, Any]] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": gather_states(self._trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict["ranks"]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._to_restore is None:
            return
        saved = len(self._to_restore)
        if saved != trainer.world_size and trainer.is_global_zero:
            log.warning(
                "resuming a run of %d process(es) with %d: the data order continues where it "
                "stopped, but the steps are not those of an uninterrupted run of either size "
                "(another global batch, other random streams per process)",
                saved,
                trainer.world_size,
            )
        restore_random_state(self._to_restore[trainer.global_rank % saved])
        self._to_restore = None
