"""Every TensorBoard tag the runs write, in one place; `metrics.json` keys are the same strings.

TensorBoard's Time Series lays its cards out by group (a tag up to its first `/`), groups and
the tags in each in alphabetical order. A training run's groups are `train` and `val` (and,
first, `quality` where the training FID is on), and in each the loss sorts first: `train/loss`,
`train/loss_epoch`, `train/lr`, `train/schedule`, `train/schedule_alpha_bar_T`; `val/loss`,
`val/loss_t<lo>-<hi>`, `val/samples`. Lightning's own `epoch` scalar is not written
(`tracking.tensorboard.RunTensorBoardLogger`): it would be the first card.
"""

from __future__ import annotations

# The per-step training loss (written once per epoch by lit.callbacks.LossCurve) and its mean
# over the epoch (Lightning's `_epoch` suffix of a metric logged on_epoch).
TRAIN_LOSS = "train/loss"
TRAIN_LOSS_EPOCH = "train/loss_epoch"
# LearningRateMonitor's name for the schedule (lit.lr_schedules); Lightning's own is lr-<Optimizer>.
LEARNING_RATE = "train/lr"
# The noise schedule: its figure and alpha_bar at the last step (lit.diagnostics).
SCHEDULE_FIGURE = "train/schedule"
ALPHA_BAR_T = "train/schedule_alpha_bar_T"

VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
# The labelled sample grid of each validation epoch (lit.callbacks.SampleGrid).
SAMPLE_GRID = "val/samples"

TEST_ACC = "test/acc"
CONFUSION_FIGURE = "test/confusion_matrix"

# evaluate's nearest-neighbour figure; the FID during training (lit.training_fid).
MEMORISATION_FIGURE = "quality/memorisation"
TRAINING_FID_PREFIX = "quality/fid_"


def training_fid(count: int) -> str:
    """The FID of `count` samples during training: the count is part of the name, as the
    estimate's bias depends on it (`quality/fid_100samples_biased`)."""
    return f"{TRAINING_FID_PREFIX}{count}samples_biased"


def val_loss_bucket(lo: int, hi: int) -> str:
    """The validation loss over timesteps lo..hi: `val/loss_t0000-0124`."""
    return f"{VAL_LOSS}_t{lo:04d}-{hi:04d}"


def by_epoch(tag: str) -> str:
    """`val/acc` -> `val_by_epoch/acc`: an epoch-level metric again against the epoch, in a group
    of its own (its step is the epoch, not the optimizer step)."""
    section, name = tag.split("/", 1)
    return f"{section}_by_epoch/{name}"
