"""Image grids: samples a row per class, one panel per sweep job, nearest-neighbour pairs."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from diffusion_lab.figures.fonts import label_text

GRID_PADDING = 2


def class_grid(images: Tensor, per_class: int) -> Tensor:
    """uint8 (K * per_class, C, H, W), class-major -> a uint8 (C, H', W') grid, a row per class."""
    return make_grid(images, nrow=per_class, padding=GRID_PADDING, pad_value=255)


def class_grid_figure(grid: Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """A `class_grid` (one row per name in `class_names`) with each row labelled by its class."""
    rows = len(class_names)
    # make_grid lays out rows * (h + padding) + padding pixels.
    cell = (grid.shape[-2] - GRID_PADDING) / rows
    image = grid.permute(1, 2, 0).cpu().numpy()
    columns = image.shape[1] / image.shape[0] * rows
    fig = Figure(figsize=(1.0 + 0.6 * columns, 0.6 * rows + 0.6))
    ax = fig.subplots()
    ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    centres = [GRID_PADDING + cell * i + (cell - GRID_PADDING) / 2 for i in range(rows)]
    labels, font = label_text(class_names)
    ax.set_yticks(centres, labels=labels, **font)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    return fig


def sweep_grid_figure(
    rows: Sequence[tuple[str, Tensor]], class_names: Sequence[str], title: str = ""
) -> Figure:
    """One panel per job: `rows` holds (label, uint8 (n * K, C, H, W) images, one column per
    class); panels of different image sizes are drawn at the same width."""
    columns = len(class_names)
    labels, font = label_text(class_names)
    per_class = max(len(images) // columns for _, images in rows)
    fig = Figure(figsize=(1.8 + 0.7 * columns, (0.7 * per_class + 0.25) * len(rows) + 0.6))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for i, (ax, (label, images)) in enumerate(zip(axes, rows, strict=True)):
        grid = make_grid(images, nrow=columns, padding=GRID_PADDING, pad_value=255)
        ax.imshow(grid.permute(1, 2, 0).cpu().numpy(), vmin=0, vmax=255)
        cell = (grid.shape[-1] - GRID_PADDING) / columns
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([GRID_PADDING / 2 + cell * (c + 0.5) for c in range(columns)])
        ax.set_xticklabels(labels if i == 0 else [], fontsize=7, **font)
        ax.xaxis.set_ticks_position("top")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(title, fontsize=9)
    return fig


def nearest_pairs_figure(generated: Tensor, nearest: Tensor, ratios: Sequence[float]) -> Figure:
    """Generated images (top row) over their nearest training images (bottom row), each pair
    titled with d_1 / d_2; uint8 (n, C, H, W) each."""
    n = len(generated)
    fig = Figure(figsize=(1.2 * n + 0.8, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for row, image in enumerate((generated[i], nearest[i])):
            ax = axes[row, i]
            picture = image.permute(1, 2, 0).squeeze(-1).cpu().numpy()
            ax.imshow(picture, cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, i].set_title(f"{ratios[i]:.2f}", fontsize=8)
    axes[0, 0].set_ylabel("generated", fontsize=8)
    axes[1, 0].set_ylabel("nearest\ntraining", fontsize=8)
    fig.suptitle("closest pairs in feature space (title: d1/d2, nearest / second nearest)")
    return fig
