"""`python -m diffusion_lab.report SWEEP_DIR`: the jobs of a sweep in one figure and one table.

For a sweep of training jobs it writes, into SWEEP_DIR, `report_grid.png` (one row per job,
labelled with the overrides that differ between jobs, one column per class, every row sampled
from its job's final EMA checkpoint with the same initial noise, labels and generator seed),
`report_loss.png` (the jobs' loss curves overlaid) and `report.md` (the final metrics), and
logs them to TensorBoard under SWEEP_DIR/report/.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from diffusion_lab.classify_summary import summarize_classify_sweep
from diffusion_lab.cli import report_user_errors
from diffusion_lab.data.tensors import from_signed_unit
from diffusion_lab.errors import UserFacingError
from diffusion_lab.files import atomic_path
from diffusion_lab.lit.checkpoint import class_names_of, load_ddpm
from diffusion_lab.lit.figures import (
    LossHistory,
    loss_overlay_figure,
    save_figure,
    sweep_grid_figure,
)

FINAL_CKPT = Path("checkpoints") / "last.ckpt"


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Sub-folders that Hydra ran a job in (they hold `.hydra/`), in job-number order."""
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


def job_kind(job: Path) -> str:
    """The entry point that ran a job (Hydra's job name, e.g. "train")."""
    hydra_yaml = job / ".hydra" / "hydra.yaml"
    if not hydra_yaml.is_file():
        return "unknown"
    return str(OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.name", default="unknown"))


def job_overrides(job: Path) -> list[str]:
    """The command-line overrides of a job, from `.hydra/overrides.yaml`."""
    path = job / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def row_labels(overrides: list[list[str]]) -> list[str]:
    """Each job's overrides that not every job shares (all of them for a single job)."""
    shared = set.intersection(*(set(o) for o in overrides)) if len(overrides) > 1 else set()
    return [" ".join(o for o in job if o not in shared) or "(defaults)" for job in overrides]


def initial_noise(
    shape: tuple[int, ...], seed: int, device: torch.device
) -> tuple[Tensor, torch.Generator]:
    """x_T ~ N(0, I) of `shape` from a generator seeded with `seed`, and that generator.

    Every job gets a fresh generator with the same seed, so jobs of one image shape start
    from identical x_T and draw identical per-step noise; a job with another img_size (or
    channel count) gets noise of its own shape drawn the same way from the same seed.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=device), generator


def build_sampler(config: dict[str, Any]) -> Callable[..., Tensor]:
    """The job's own sampler (partial function) from its stored run config."""
    return instantiate(config["sampler"])


def sample_job(
    ckpt: Path, per_class: int, seed: int, device: torch.device
) -> tuple[Tensor, tuple[str, ...]]:
    """uint8 (per_class * K, C, H, W) samples of a job's final checkpoint, one column per class."""
    module, config = load_ddpm(ckpt, map_location=device)
    module.to(device)
    net = module.net
    size, channels = int(config["img_size"]), int(config["data"]["channels"])
    labels = torch.arange(net.num_classes, device=device).repeat(per_class)
    x_T, generator = initial_noise((len(labels), channels, size, size), seed, device)
    progress = functools.partial(tqdm, desc=f"sampling {ckpt.parents[1].name}", leave=False)
    x0 = build_sampler(config)(
        net, module.schedule, x_T, labels, generator, null_label=net.null_label, progress=progress
    )
    return from_signed_unit(x0).cpu(), class_names_of(config)


def loss_history(job: Path) -> LossHistory:
    """(train steps, train/loss, val steps, val/loss) from a job's TensorBoard event files."""
    events = EventAccumulator(str(job), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])

    def series(tag: str) -> tuple[list[int], list[float]]:
        points = events.Scalars(tag) if tag in tags else []
        return [p.step for p in points], [p.value for p in points]

    return (*series("train/loss"), *series("val/loss"))


def metrics_table(labels: list[str], metrics: list[dict[str, float]]) -> str:
    """A markdown table: one row per job, one column per metric key of any job."""
    keys = sorted(set().union(*metrics))
    lines = ["| job | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
    for label, values in zip(labels, metrics, strict=True):
        cells = [f"{values[k]:.4g}" if k in values else "" for k in keys]
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finished_jobs(sweep_dir: Path, jobs: list[Path]) -> list[Path]:
    """Jobs with metrics.json and a final checkpoint; a note on stderr for each other job."""
    done = [j for j in jobs if (j / "metrics.json").is_file() and (j / FINAL_CKPT).is_file()]
    for job in sorted(set(jobs) - set(done)):
        print(
            f"note: skipping {job}: unfinished (no metrics.json or {FINAL_CKPT})", file=sys.stderr
        )
    if not done:
        raise UserFacingError(
            f"{sweep_dir}: none of its {len(jobs)} job(s) has finished "
            f"(metrics.json and {FINAL_CKPT}); nothing to report"
        )
    return done


def report_training_sweep(sweep_dir: Path, jobs: list[Path], args: argparse.Namespace) -> None:
    """Sample every finished training job from the same noise; write grid, losses and table."""
    jobs = finished_jobs(sweep_dir, jobs)
    labels = row_labels([job_overrides(j) for j in jobs])
    device = torch.device(args.device)
    rows, class_names = [], ()
    for job, label in zip(jobs, labels, strict=True):
        images, class_names = sample_job(job / FINAL_CKPT, args.per_class, args.seed, device)
        rows.append((label, images))
    title = f"{sweep_dir}: final EMA weights, same initial noise and generator seed {args.seed}"
    grid = sweep_grid_figure(rows, class_names, title)
    losses = loss_overlay_figure(dict(zip(labels, map(loss_history, jobs), strict=True)))
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    table = metrics_table(labels, metrics)
    save_figure(grid, sweep_dir / "report_grid.png")
    save_figure(losses, sweep_dir / "report_loss.png")
    with atomic_path(sweep_dir / "report.md") as tmp:
        tmp.write_text(report_markdown(sweep_dir, table, args.seed))
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


def report_classify_sweep(sweep_dir: Path, jobs: list[Path], args: argparse.Namespace) -> None:
    """Mean ± std test accuracy per mode and per-class differences of a classifier sweep."""
    written = summarize_classify_sweep(sweep_dir)
    print("wrote " + ", ".join(str(p) for p in written))


# One reporter per kind of sweep, keyed by the entry point that ran its jobs.
REPORTERS: dict[str, Callable[[Path, list[Path], argparse.Namespace], None]] = {
    "train": report_training_sweep,
    "classify": report_classify_sweep,
}


def report(args: argparse.Namespace) -> None:
    """Find the jobs of SWEEP_DIR, detect what ran them, and hand them to that reporter."""
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise UserFacingError(f"{sweep_dir}: no such folder")
    jobs = job_dirs(sweep_dir)
    if not jobs:
        raise UserFacingError(f"{sweep_dir}: no job folders (sub-folders with .hydra/) in it")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserFacingError(f"--device={args.device}: no CUDA GPU is visible; use --device cpu")
    kinds = sorted({job_kind(j) for j in jobs})
    if len(kinds) > 1 or kinds[0] not in REPORTERS:
        raise UserFacingError(
            f"{sweep_dir}: jobs of {', '.join(kinds)}; a report exists for {', '.join(REPORTERS)}"
        )
    REPORTERS[kinds[0]](sweep_dir, jobs, args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra sweep folder, e.g. multirun/DATE/TIME")
    parser.add_argument("--per-class", type=int, default=1, help="samples per class and job")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shared noise")
    parser.add_argument("--device", default="cpu", help="torch device for sampling")
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error("--per-class must be >= 1")
    return args


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    report(parse_args(argv))


if __name__ == "__main__":
    main()
