"""Summary of a `classify` sweep: accuracy per data mode and per class, over seeds.

`summarize_classify_sweep(SWEEP_DIR)` reads every job folder's `.hydra/`, `metrics.json` and
event files and writes into the sweep folder:
- `report.md`: test accuracy per mode (mean ± sample std over seeds, no ± for one seed) with
  the number of seeds, and per class, with the differences augmented − real and
  synthetic − real, paired by seed;
- `per_class_accuracy.png`: the test accuracy of every class per mode;
- `per_class_difference.png` (where `real` and another mode ran with the same seeds): the
  per-class differences to `real`, with their spread over seeds;
- `validation_curves.png` (where the jobs logged validation): each mode's validation accuracy
  and loss against the epoch, mean over seeds with a ± one std band.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from diffusion_lab.figures.bars import per_class_accuracy_figure, per_class_difference_figure
from diffusion_lab.figures.curves import epoch_curves_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.reporting.epoch_curves import Curve, mean_curve, validation_by_epoch
from diffusion_lab.reporting.sweeps import differing_note, job_overrides, mean_std, sweep_name
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import atomic_path

MODE_ORDER = ("real", "augmented", "synthetic")
# The panels of validation_curves.png: (y label, key of Job.validation, scale of the values).
VALIDATION_PANELS = (
    ("validation accuracy (%)", "acc", 100.0),
    ("validation loss (cross-entropy)", "loss", 1.0),
)


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
    overrides: list[str]
    validation: dict[str, Curve]


def read_job(folder: Path) -> Job:
    """A job from its metrics.json (resolved mode, results), .hydra/ (data, overrides) and
    event files (validation per epoch)."""
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
            overrides=job_overrides(folder),
            validation=validation_by_epoch(folder),
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


def pm(values: Sequence[float], scale: float = 100.0) -> str:
    """`mean ± std` in percent (points); just the mean for a single value."""
    mean, std = mean_std(values)
    return f"{scale * mean:.2f}" if std is None else f"{scale * mean:.2f} ± {scale * std:.2f}"


def paired_differences(by_mode: dict[str, list[Job]], mode: str) -> dict[str, list[float]]:
    """Per class: accuracy of `mode` minus that of `real` for every seed run in both modes."""
    real = {job.seed: job for job in by_mode.get("real", [])}
    diffs: dict[str, list[float]] = defaultdict(list)
    for job in by_mode.get(mode, []):
        if job.seed in real:
            for name, acc in job.per_class.items():
                diffs[name].append(acc - real[job.seed].per_class[name])
    return dict(diffs)


def compared_modes(by_mode: dict[str, list[Job]]) -> list[str]:
    """The modes other than `real` that share at least one seed with it."""
    real_seeds = {job.seed for job in by_mode.get("real", [])}
    return [m for m, jobs in by_mode.items() if m != "real" and real_seeds & {j.seed for j in jobs}]


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
    compared = compared_modes(by_mode)
    diffs = {m: paired_differences(by_mode, m) for m in compared}
    header = [f"{m} (%)" for m in by_mode] + [f"{m} − real (points)" for m in compared]
    rows = ["| class | " + " | ".join(header) + " |", "|" + " --- |" * (len(header) + 1)]
    for name in classes:
        cells = [pm([j.per_class[name] for j in jobs]) for jobs in by_mode.values()]
        cells += [pm(diffs[m][name]) for m in compared]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def per_class_stats(by_mode: dict[str, list[Job]], classes: list[str]) -> dict[str, list]:
    """Per mode (labelled with its run count): (mean, std or None) of each class's accuracy."""
    return {
        f"{mode} (n={len(jobs)})": [mean_std([j.per_class[name] for j in jobs]) for name in classes]
        for mode, jobs in by_mode.items()
    }


def difference_stats(by_mode: dict[str, list[Job]], classes: list[str]) -> dict[str, list]:
    """Per compared mode: (mean, std or None) over seeds of each class's paired difference."""
    stats = {}
    for mode in compared_modes(by_mode):
        diffs = paired_differences(by_mode, mode)
        stats[f"{mode} − real (n={len(diffs[classes[0]])})"] = [
            mean_std(diffs[name]) for name in classes
        ]
    return stats


def validation_panels(by_mode: dict[str, list[Job]]) -> dict[str, dict]:
    """The panels of `validation_curves.png`: accuracy (%) and loss, a mean curve per mode
    (modes without logged validation left out)."""
    panels = {}
    for ylabel, name, scale in VALIDATION_PANELS:
        curves = {
            f"{mode} (n={len(jobs)})": mean_curve([j.validation[name] for j in jobs], scale)
            for mode, jobs in by_mode.items()
        }
        curves = {label: curve for label, curve in curves.items() if curve[0]}
        if curves:
            panels[ylabel] = curves
    return panels


def group_by_mode(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs per mode, modes in the order real, augmented, synthetic."""
    by_mode: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_mode[job.mode].append(job)
    known = [m for m in MODE_ORDER if m in by_mode]
    return {m: by_mode[m] for m in [*known, *sorted(set(by_mode) - set(known))]}


def classify_figures(sweep_dir: Path, jobs: list[Job]) -> dict[str, Figure]:
    """The sweep's figures by file name; titles name the sweep and what differs between jobs."""
    by_mode = group_by_mode(jobs)
    classes = list(jobs[0].per_class)
    heading = f"{sweep_name(sweep_dir)} ({differing_note([j.overrides for j in jobs])})"
    spread = "mean ± sample std over seeds"
    figures = {
        "per_class_accuracy.png": per_class_accuracy_figure(
            per_class_stats(by_mode, classes), classes, f"{heading}\ntest accuracy, {spread}"
        )
    }
    differences = difference_stats(by_mode, classes)
    if differences:
        figures["per_class_difference.png"] = per_class_difference_figure(
            differences, classes, f"{heading}\ntest accuracy − real, paired by seed, {spread}"
        )
    panels = validation_panels(by_mode)
    if panels:
        figures["validation_curves.png"] = epoch_curves_figure(
            panels, f"{heading}\nvalidation after each epoch, {spread}"
        )
    return figures


def report_lines(sweep_dir: Path, jobs: list[Job], figures: list[str]) -> list[str]:
    """The lines of report.md."""
    by_mode = group_by_mode(jobs)
    return [
        f"# Classifier sweep {sweep_dir.name}",
        "",
        f"{len(jobs)} runs on {', '.join(sorted({j.data for j in jobs}))}; accuracy on the real "
        "test split, mean ± sample standard deviation over seeds (no ± where one seed ran). "
        "Differences are paired by seed.",
        "",
        *mode_table(by_mode),
        "",
        "## Per class",
        "",
        *class_table(by_mode, list(jobs[0].per_class)),
        *(f"\n![{name.removesuffix('.png')}]({name})" for name in figures),
    ]


def summarize_classify_sweep(sweep_dir: Path) -> list[Path]:
    """Write report.md and the figures into `sweep_dir` and print the per-mode table; returns
    the paths written."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    figures = classify_figures(sweep_dir, jobs)
    report = sweep_dir / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(report_lines(sweep_dir, jobs, list(figures))) + "\n")
    written = [report, *(save_figure(fig, sweep_dir / name) for name, fig in figures.items())]
    print("\n".join(mode_table(group_by_mode(jobs))))
    return written
