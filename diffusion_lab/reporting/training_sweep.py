"""The report of a training sweep: every job sampled from the same noise, losses, metrics.

It writes, into the sweep folder, `report_grid.png` (one row per job, labelled with the
overrides that differ between jobs, one column per class, every row sampled from its job's
final EMA checkpoint with the same initial noise, labels and generator seed),
`report_loss.png` (the jobs' loss curves overlaid) and `report.md` (the final metrics), and
logs them to TensorBoard under SWEEP_DIR/report/.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from diffusion_lab.files import atomic_path
from diffusion_lab.lit.run import TrainedRun
from diffusion_lab.plotting import LossHistory, loss_overlay_figure, save_figure, sweep_grid_figure
from diffusion_lab.reporting.sweeps import (
    FINAL_CKPT,
    finished_jobs,
    job_overrides,
    metrics_table,
    row_labels,
)


def sample_job(
    ckpt: Path, per_class: int, seed: int, device: torch.device
) -> tuple[Tensor, tuple[str, ...]]:
    """uint8 (per_class * K, C, H, W) samples of a job's final checkpoint, one column per class.

    Every job samples with a fresh generator seeded with `seed`, so jobs of one image shape
    start from identical x_T and draw identical per-step noise; a job with another img_size
    (or channel count) gets noise of its own shape drawn the same way from the same seed.
    """
    run = TrainedRun.load(ckpt, map_location=device).to(device)
    labels = torch.arange(run.spec.num_classes, device=device).repeat(per_class)
    progress = functools.partial(tqdm, desc=f"sampling {ckpt.parents[1].name}", leave=False)
    images = run.sample(labels, seed, progress=progress).cpu()
    names = run.spec.class_names or tuple(str(k) for k in range(run.spec.num_classes))
    return images, names


def loss_history(job: Path) -> LossHistory:
    """(train steps, train/loss, val steps, val/loss) from a job's TensorBoard event files."""
    events = EventAccumulator(str(job), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])

    def series(tag: str) -> tuple[list[int], list[float]]:
        points = events.Scalars(tag) if tag in tags else []
        return [p.step for p in points], [p.value for p in points]

    return (*series("train/loss"), *series("val/loss"))


def report_training_sweep(
    sweep_dir: Path, jobs: list[Path], per_class: int, seed: int, device: torch.device
) -> None:
    """Sample every finished training job from the same noise; write grid, losses and table."""
    jobs = finished_jobs(sweep_dir, jobs)
    labels = row_labels([job_overrides(j) for j in jobs])
    rows, class_names = [], ()
    for job, label in zip(jobs, labels, strict=True):
        images, class_names = sample_job(job / FINAL_CKPT, per_class, seed, device)
        rows.append((label, images))
    title = f"{sweep_dir}: final EMA weights, same initial noise and generator seed {seed}"
    grid = sweep_grid_figure(rows, class_names, title)
    losses = loss_overlay_figure(dict(zip(labels, map(loss_history, jobs), strict=True)))
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    table = metrics_table(labels, metrics)
    save_figure(grid, sweep_dir / "report_grid.png")
    save_figure(losses, sweep_dir / "report_loss.png")
    with atomic_path(sweep_dir / "report.md") as tmp:
        tmp.write_text(report_markdown(sweep_dir, table, seed))
    with SummaryWriter(log_dir=str(sweep_dir / "report")) as writer:
        writer.add_figure("report/grid", grid)
        writer.add_figure("report/loss", losses)
        writer.add_text("report/metrics", table)
    print(f"wrote {sweep_dir / 'report_grid.png'}, report_loss.png and report.md")


def report_markdown(sweep_dir: Path, table: str, seed: int) -> str:
    """report.md: the figures and the table of final metrics."""
    return (
        f"# Sweep report: {sweep_dir}\n\n"
        f"Rows are sampled from each job's final (EMA) checkpoint with the same initial noise, "
        f"labels and generator seed ({seed}).\n\n"
        "![samples](report_grid.png)\n\n![loss curves](report_loss.png)\n\n"
        f"## Final metrics (metrics.json)\n\n{table}\n"
    )
