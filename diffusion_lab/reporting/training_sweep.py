"""The report of a training sweep: every job sampled from the same noise, losses, metrics.

It writes, into the sweep folder, `report_grid.png` (one row per job, labelled with the
overrides that differ between jobs, one column per class, every row sampled from its job's
final EMA checkpoint with the same initial noise, labels and generator seed),
`report_loss.png` (the jobs' loss curves overlaid: every step's training loss from each job's
`loss_history.csv`),
`report_quality.png` (only when some job's metrics.json has `quality/*` keys: each of them
against the swept override) and `report.md` (the figures, a caveat where the jobs' noise
schedules differ, and the final metrics), and logs the figures to TensorBoard under
SWEEP_DIR/report/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from diffusion_lab.figures.curves import loss_overlay_figure
from diffusion_lab.figures.grids import sweep_grid_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.figures.sweeps import metrics_by_job_figure
from diffusion_lab.reporting.sweeps import (
    FINAL_CKPT,
    QUALITY_PREFIX,
    differing_note,
    finished_jobs,
    job_overrides,
    metrics_table,
    row_labels,
    sweep_name,
    swept_axis,
)
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.tracking.loss_history import HISTORY_FILE, LossHistory, read_loss_history
from diffusion_lab.utils.errors import UserFacingError
from diffusion_lab.utils.files import atomic_path
from diffusion_lab.utils.progress import images_per_step, progress_bar


def sample_job(
    ckpt: Path, per_class: int, seed: int, device: torch.device
) -> tuple[Tensor, tuple[str, ...], dict[str, Any]]:
    """uint8 (per_class * K, C, H, W) samples of a job's final checkpoint, one column per class,
    the class names and the job's resolved noise-schedule config.

    Every job samples with a fresh generator seeded with `seed`, so jobs of one image shape
    start from identical x_T and draw identical per-step noise; a job with another img_size
    (or channel count) gets noise of its own shape drawn the same way from the same seed.
    """
    run = TrainedRun.load(ckpt, map_location=device).to(device)
    labels = torch.arange(run.spec.num_classes, device=device).repeat(per_class)
    with progress_bar(len(labels), f"sampling {ckpt.parents[1].name}", leave=False) as bar:
        images = run.sample(labels, seed, progress=images_per_step(bar, len(labels))).cpu()
    names = run.spec.class_names or tuple(str(k) for k in range(run.spec.num_classes))
    return images, names, dict((run.config or {}).get("schedule") or {})


def loss_history(job: Path) -> LossHistory:
    """A finished job's every-step loss history, from its `loss_history.csv`."""
    path = job / HISTORY_FILE
    if not path.is_file():
        raise UserFacingError(f"{job}: no {HISTORY_FILE}; every finished train job writes one")
    return read_loss_history(path)


def flat_fields(node: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The leaves of a nested config as `dotted.path: value` strings."""
    fields: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            fields |= flat_fields(value, f"{prefix}{key}.")
        else:
            fields[f"{prefix}{key}"] = str(value)
    return fields


def schedule_differences(schedules: list[dict[str, Any]]) -> list[str]:
    """`beta_T: 0.01, 0.02`-style notes for every noise-schedule setting that differs between
    jobs (the betas function, T, beta_1, beta_T, ...); empty where all schedules are equal."""
    fields = [flat_fields(s) for s in schedules]
    notes = []
    for path in dict.fromkeys(p for f in fields for p in f):
        values = [f.get(path, "(unset)") for f in fields]
        if len(set(values)) > 1:
            name = path.rsplit(".", 1)[-1]
            if name == "_target_":
                name, values = "schedule", [v.rsplit(".", 1)[-1] for v in values]
            notes.append(f"{name}: {', '.join(dict.fromkeys(values))}")
    return notes


def schedule_caveat(schedules: list[dict[str, Any]]) -> str:
    """A sentence for report.md where the jobs' noise schedules differ, else ""."""
    differences = schedule_differences(schedules)
    if not differences:
        return ""
    return (
        f"**The jobs' noise schedules differ** ({'; '.join(differences)}): each loss is the "
        "eps-MSE under that job's own forward process, so the losses measure different tasks "
        "and their levels do not rank the jobs. Compare the samples (and quality metrics) instead."
    )


def loss_figure(jobs: list[Path], labels: list[str], title: str, caveat: str) -> Figure:
    """The jobs' loss curves overlaid, every step of each."""
    curves = {label: loss_history(job) for job, label in zip(jobs, labels, strict=True)}
    if caveat:
        title += "\nnoise schedules differ: these losses measure different tasks"
    return loss_overlay_figure(curves, title)


def quality_figure(
    overrides: list[list[str]], metrics: list[dict[str, Any]], title: str
) -> Figure | None:
    """Each `quality/*` metric (FID first) against the swept override; None without any."""
    keys = sorted({k for m in metrics for k in m if k.startswith(QUALITY_PREFIX)})
    if not keys:
        return None
    keys.sort(key=lambda k: k != f"{QUALITY_PREFIX}fid")
    xlabel, xs = swept_axis(overrides)
    values = {k: [m.get(k) for m in metrics] for k in keys}
    return metrics_by_job_figure(xlabel, xs, values, title)


def report_training_sweep(
    sweep_dir: Path, jobs: list[Path], per_class: int, seed: int, device: torch.device
) -> None:
    """Sample every finished training job from the same noise; write the figures and table."""
    jobs = finished_jobs(sweep_dir, jobs)
    overrides = [job_overrides(j) for j in jobs]
    labels = row_labels(overrides)
    heading = f"{sweep_name(sweep_dir)} ({differing_note(overrides)})"
    rows, schedules, class_names = [], [], ()
    for job, label in zip(jobs, labels, strict=True):
        images, class_names, schedule = sample_job(job / FINAL_CKPT, per_class, seed, device)
        rows.append((label, images))
        schedules.append(schedule)
    caveat = schedule_caveat(schedules)
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    losses = loss_figure(jobs, labels, f"{heading}: loss", caveat)
    figures = {
        "report_grid.png": sweep_grid_figure(
            rows, class_names, f"{heading}: final EMA weights, same noise and generator seed {seed}"
        ),
        "report_loss.png": losses,
    }
    quality = quality_figure(overrides, metrics, f"{heading}: sample quality")
    if quality is not None:
        figures["report_quality.png"] = quality
    table = metrics_table(labels, metrics)
    for name, figure in figures.items():
        save_figure(figure, sweep_dir / name)
    with atomic_path(sweep_dir / "report.md") as tmp:
        tmp.write_text(report_markdown(sweep_dir, list(figures), table, seed, [caveat]))
    with SummaryWriter(log_dir=str(sweep_dir / "report")) as writer:
        for name, figure in figures.items():
            writer.add_figure(f"report/{name.removeprefix('report_').removesuffix('.png')}", figure)
        writer.add_text("report/metrics", table)
    print(f"wrote {', '.join(str(sweep_dir / name) for name in figures)} and report.md")


def report_markdown(
    sweep_dir: Path, figures: list[str], table: str, seed: int, notes: list[str]
) -> str:
    """report.md: the figures, the notes (the schedule caveat) and the metrics."""
    images = "\n\n".join(f"![{name.removesuffix('.png')}]({name})" for name in figures)
    paragraphs = "".join(f"{note}\n\n" for note in notes if note)
    return (
        f"# Sweep report: {sweep_dir}\n\n"
        f"Rows are sampled from each job's final (EMA) checkpoint with the same initial noise, "
        f"labels and generator seed ({seed}). Training losses are every optimizer step's, from "
        f"each job's `{HISTORY_FILE}`.\n\n"
        f"{paragraphs}{images}\n\n"
        f"## Final metrics (metrics.json)\n\n{table}\n"
    )
