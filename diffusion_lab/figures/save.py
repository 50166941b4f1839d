"""Writing a figure: PNG, atomically. Every figure is built with matplotlib's object API (no
pyplot state), so nothing needs closing."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from diffusion_lab.utils.files import atomic_path


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)
