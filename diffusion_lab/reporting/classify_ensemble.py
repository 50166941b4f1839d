"""The outputs of the batched classifier stage (`diffusion_lab.jobs.ensemble`).

`ensemble_metrics` gathers, per member (mode, seed), the test accuracy (overall and per class),
the test confusion matrix and the per-epoch curves (training loss, validation loss and
accuracy), and per mode the mean ± sample std of the test accuracy over seeds (std None for
one seed). `write_outputs` writes them into the run folder:
- `metrics.json`;
- `loss_history_<mode>_seed<seed>.csv` per member: the loss of every own optimizer step
  and the validation loss after each epoch (`diffusion_lab.tracking.loss_history`'s format);
- `loss_curves_<mode>.png` per mode: each seed's training loss (mean over its epoch), validation
  loss and validation accuracy against the epoch;
- `confusion_<mode>.png` per mode: the test confusion matrix of its seeds' summed counts,
  row-normalised, so each cell is the mean over seeds of that share.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diffusion_lab.data.members import MemberSchedule
from diffusion_lab.figures.curves import epoch_curves_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.lit.classifier import normalized_confusion
from diffusion_lab.lit.confusion import confusion_figure
from diffusion_lab.reporting.sweeps import mean_std
from diffusion_lab.tracking.loss_history import LossHistory, write_loss_history
from diffusion_lab.utils.files import write_json


def member_metrics(
    schedule: MemberSchedule, m: int, result: dict[str, Any], class_names: Sequence[str]
) -> dict[str, Any]:
    """One member's results: its test accuracy, per class and confusion, and its curves."""
    member, confusion = schedule.members[m], result["confusion"]
    per_class = normalized_confusion(confusion).diagonal().tolist()
    return {
        "mode": member.mode,
        "seed": member.seed,
        "n_train": member.size,
        "steps": schedule.total_steps(m),
        "steps_per_epoch": schedule.steps_per_epoch(m),
        "test/acc": int(confusion.diagonal().sum()) / int(confusion.sum()),
        "test/per_class_acc": dict(zip(class_names, per_class, strict=True)),
        "test/confusion": confusion.tolist(),
        "train/loss_epoch": result["train_epoch_loss"],
        "val/loss": result["val_loss"],
        "val/acc": result["val_acc"],
    }


def mode_summary(members: list[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """A mode's test accuracy over its seeds: the values, mean and sample std, also per class."""
    accs = [member["test/acc"] for member in members]
    mean, std = mean_std(accs)
    classes = {
        name: mean_std([member["test/per_class_acc"][name] for member in members])
        for name in class_names
    }
    return {
        "seeds": [member["seed"] for member in members],
        "test/acc": accs,
        "test/acc_mean": mean,
        "test/acc_std": std,
        "test/per_class_acc_mean": {name: m for name, (m, _) in classes.items()},
        "test/per_class_acc_std": {name: s for name, (_, s) in classes.items()},
    }


def ensemble_metrics(
    schedule: MemberSchedule,
    results: dict[str, dict[str, Any]],
    class_names: Sequence[str],
    info: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json's content: `info`, then `members` (a list) and `modes` (by mode)."""
    members = [
        member_metrics(schedule, m, results[member.name], class_names)
        for m, member in enumerate(schedule.members)
    ]
    modes = dict.fromkeys(member.mode for member in schedule.members)
    summaries = {
        mode: mode_summary([x for x in members if x["mode"] == mode], class_names) for mode in modes
    }
    return {**info, "members": members, "modes": summaries}


def loss_history(schedule: MemberSchedule, m: int, result: dict[str, Any]) -> LossHistory:
    """A member's loss at every own step (1-based) and its validation loss after each epoch."""
    spe = schedule.steps_per_epoch(m)
    train_steps = range(1, schedule.total_steps(m) + 1)
    val_steps = [spe * (e + 1) for e in range(schedule.epochs)]
    return LossHistory(list(train_steps), result["train_losses"], val_steps, result["val_loss"])


def loss_curves_title(members: list[dict[str, Any]], schedule: MemberSchedule) -> str:
    first = members[0]
    return (
        f"mode {first['mode']}: {first['n_train']} training images, batch "
        f"{schedule.batch_size}, {first['steps_per_epoch']} steps per epoch; one line per seed"
    )


def loss_curves_panels(members: list[dict[str, Any]]) -> dict[str, dict]:
    """Panels of loss_curves_<mode>.png: a line per seed (no spread band)."""
    panels = {
        "training cross-entropy (epoch mean)": ("train/loss_epoch", 1.0),
        "validation cross-entropy": ("val/loss", 1.0),
        "validation accuracy (%)": ("val/acc", 100.0),
    }
    return {
        ylabel: {
            f"seed {x['seed']}": (
                list(range(1, len(x[key]) + 1)),
                [scale * v for v in x[key]],
                None,
            )
            for x in members
        }
        for ylabel, (key, scale) in panels.items()
    }


def write_outputs(
    metrics: dict[str, Any],
    schedule: MemberSchedule,
    results: dict[str, dict[str, Any]],
    class_names: Sequence[str],
    output_dir: str | Path,
) -> list[Path]:
    """metrics.json, the loss histories and the figures (see the module docstring)."""
    out = Path(output_dir)
    written = [write_json(metrics, out / "metrics.json")]
    for m, member in enumerate(schedule.members):
        path = out / f"loss_history_{member.name}.csv"
        write_loss_history(loss_history(schedule, m, results[member.name]), path)
        written.append(path)
    for mode in metrics["modes"]:
        members = [x for x in metrics["members"] if x["mode"] == mode]
        figure = epoch_curves_figure(
            loss_curves_panels(members), loss_curves_title(members, schedule)
        )
        written.append(save_figure(figure, out / f"loss_curves_{mode}.png"))
        confusion = torch.stack([torch.tensor(x["test/confusion"]) for x in members]).sum(0)
        seeds = ", ".join(str(x["seed"]) for x in members)
        accuracy = 100 * float(confusion.diagonal().sum() / confusion.sum())
        title = (
            f"mode {mode}, seeds {seeds} (counts summed: shares are means over seeds)\n"
            f"test split, {int(confusion.sum()) // len(members)} images, accuracy {accuracy:.2f} %"
        )
        figure = confusion_figure(confusion, class_names, title)
        written.append(save_figure(figure, out / f"confusion_{mode}.png"))
    return written
