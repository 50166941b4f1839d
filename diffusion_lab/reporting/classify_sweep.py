"""Summary of a `classify` sweep: test accuracy per data mode and per class, over seeds.

`summarize_classify_sweep(SWEEP_DIR)` reads every job folder's `.hydra/config.yaml` and
`metrics.json` and writes `report.md` (mean ± sample std per mode with the number of seeds,
and the per-class accuracy differences augmented − real and synthetic − real, paired by seed)
and `per_class_accuracy.png` into the sweep folder.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from diffusion_lab.errors import DataError
from diffusion_lab.files import atomic_path
from diffusion_lab.plotting import per_class_accuracy_figure, save_figure

MODE_ORDER = ("real", "augmented", "synthetic")


@dataclass(frozen=True)
class Job:
    """One finished classify run of the sweep."""

    name: str
    mode: str
    seed: int
    test_acc: float
    per_class: dict[str, float]
    n_real: int
    n_generated: int
    data: str


def read_job(folder: Path) -> Job:
    """A job from its metrics.json (resolved mode, results) and .hydra/config.yaml (data)."""
    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
        config = OmegaConf.load(folder / ".hydra" / "config.yaml")
        return Job(
            name=folder.name,
            mode=metrics["mode"],
            seed=int(metrics["seed"]),
            test_acc=float(metrics["test/acc"]),
            per_class={k: float(v) for k, v in metrics["test/per_class_acc"].items()},
            n_real=int(metrics["n_real"]),
            n_generated=int(metrics["n_generated"]),
            data=str(config.data._target_).rsplit(".", 1)[-1],
        )
    except json.JSONDecodeError:
        raise DataError(
            f"{path}: not valid JSON (a job still writing, or a damaged file)"
        ) from None
    except (KeyError, TypeError, ValueError, AttributeError, FileNotFoundError) as err:
        raise DataError(
            f"{path}: not a finished classify job's metrics ({type(err).__name__}: {err})"
        ) from None


def read_jobs(sweep_dir: Path) -> list[Job]:
    """All finished jobs of a sweep folder; DataError when there are none."""
    folders = sorted(
        p.parent for p in sweep_dir.glob("*/metrics.json") if (p.parent / ".hydra").is_dir()
    )
    if not folders:
        raise DataError(f"{sweep_dir}: no classify job folders (*/metrics.json and */.hydra)")
    return [read_job(folder) for folder in folders]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def pm(values: Sequence[float], scale: float = 100.0) -> str:
    """`mean ± std` in percent (points)."""
    mean, std = mean_std(values)
    return f"{scale * mean:.2f} ± {scale * std:.2f}"


def paired_differences(by_mode: dict[str, list[Job]], mode: str) -> dict[str, list[float]]:
    """Per class: accuracy of `mode` minus that of `real` for every seed run in both modes."""
    real = {job.seed: job for job in by_mode.get("real", [])}
    diffs: dict[str, list[float]] = defaultdict(list)
    for job in by_mode.get(mode, []):
        if job.seed in real:
            for name, acc in job.per_class.items():
                diffs[name].append(acc - real[job.seed].per_class[name])
    return dict(diffs)


def mode_table(by_mode: dict[str, list[Job]]) -> list[str]:
    """Markdown rows: test accuracy per mode."""
    rows = ["| mode | seeds | test accuracy (%) | real images | generated images |"]
    rows.append("| --- | --- | --- | --- | --- |")
    for mode, jobs in by_mode.items():
        seeds = ", ".join(str(j.seed) for j in sorted(jobs, key=lambda j: j.seed))
        accs = [j.test_acc for j in jobs]
        rows.append(
            f"| {mode} | {len(jobs)} ({seeds}) | {pm(accs)} | {jobs[0].n_real} "
            f"| {jobs[0].n_generated} |"
        )
    return rows


def class_table(by_mode: dict[str, list[Job]], classes: list[str]) -> list[str]:
    """Markdown rows: per-class accuracy per mode and the paired differences to `real`."""
    compared = [m for m in by_mode if m != "real" and "real" in by_mode]
    diffs = {m: paired_differences(by_mode, m) for m in compared}
    header = [f"{m} (%)" for m in by_mode] + [f"{m} − real (points)" for m in compared]
    rows = ["| class | " + " | ".join(header) + " |", "|" + " --- |" * (len(header) + 1)]
    for name in classes:
        cells = [pm([j.per_class[name] for j in jobs]) for jobs in by_mode.values()]
        cells += [pm(diffs[m][name]) if diffs[m].get(name) else "n/a" for m in compared]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def per_class_stats(by_mode: dict[str, list[Job]], classes: list[str]) -> dict[str, list]:
    """Per mode (labelled with its run count): (mean, std) of each class's test accuracy."""
    return {
        f"{mode} (n={len(jobs)})": [mean_std([j.per_class[name] for j in jobs]) for name in classes]
        for mode, jobs in by_mode.items()
    }


def group_by_mode(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs per mode, modes in the order real, augmented, synthetic."""
    by_mode: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_mode[job.mode].append(job)
    known = [m for m in MODE_ORDER if m in by_mode]
    return {m: by_mode[m] for m in [*known, *sorted(set(by_mode) - set(known))]}


def summarize_classify_sweep(sweep_dir: Path) -> list[Path]:
    """Write report.md and per_class_accuracy.png into `sweep_dir`; returns their paths."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    by_mode = group_by_mode(jobs)
    classes = list(jobs[0].per_class)
    lines = [
        f"# Classifier sweep {sweep_dir.name}",
        "",
        f"{len(jobs)} runs on {', '.join(sorted({j.data for j in jobs}))}; accuracy on the real "
        "test split, mean ± sample standard deviation over seeds. Differences are paired by seed.",
        "",
        *mode_table(by_mode),
        "",
        "## Per class",
        "",
        *class_table(by_mode, classes),
        "",
        "![per-class accuracy](per_class_accuracy.png)",
    ]
    report = sweep_dir / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    figure = per_class_accuracy_figure(per_class_stats(by_mode, classes), classes)
    figure = save_figure(figure, sweep_dir / "per_class_accuracy.png")
    return [report, figure]
