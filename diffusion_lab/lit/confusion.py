"""The test confusion matrix as a figure: PNG in the run folder and a figure in the loggers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from matplotlib.figure import Figure
from torch import Tensor

from diffusion_lab.figures.fonts import label_text, wrap_overrides
from diffusion_lab.figures.save import save_figure
from diffusion_lab.lit.callbacks import job_overrides
from diffusion_lab.lit.classifier import normalized_confusion
from diffusion_lab.tracking import tags
from diffusion_lab.tracking.loggers import log_figure


def confusion_figure(confusion: Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix (K, K) of counts: true class down, predicted across."""
    shares = normalized_confusion(confusion).numpy()
    k = len(class_names)
    fig = Figure(figsize=(1.2 + 0.55 * k, 0.8 + 0.5 * k))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    labels, font = label_text(class_names)
    ax.set_xticks(range(k), labels=labels, rotation=45, ha="right", **font)
    ax.set_yticks(range(k), labels=labels, **font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            color = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title, fontsize=9)
    return fig


class ConfusionMatrixFigure(pl.Callback):
    """After `trainer.test`, writes `confusion_matrix.png` and logs it as a figure.

    Reads the module's `test_results["confusion"]` (a ClassifierModule); rank 0 only. The title
    names the run: `run_label` (e.g. its mode and seed) and the Hydra job's overrides.
    """

    def __init__(self, output_dir: str, run_label: str = "") -> None:
        self.path = Path(output_dir) / "confusion_matrix.png"
        self.run_label = run_label

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        confusion = pl_module.test_results.get("confusion")
        if confusion is None or not trainer.is_global_zero:
            return
        accuracy = float(confusion.diagonal().sum() / confusion.sum().clamp_min(1))
        run = wrap_overrides(",".join(part for part in (self.run_label, job_overrides()) if part))
        title = f"test split, {int(confusion.sum())} images, accuracy {100 * accuracy:.2f} %"
        title = f"{run}\n{title}" if run else title
        names = trainer.datamodule.class_names
        fig = confusion_figure(confusion, names, title)
        save_figure(fig, self.path)
        log_figure(trainer.loggers, tags.CONFUSION_FIGURE, fig, trainer.global_step)
