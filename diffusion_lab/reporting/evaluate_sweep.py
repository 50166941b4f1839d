"""The report of an `evaluate` sweep over the guidance weight w and the sampler's steps.

`report_evaluate_sweep(SWEEP_DIR, JOBS)` reads each finished job's metrics.json (its
`quality/*` numbers and `protocol`) and `.hydra/overrides.yaml`, prints the table and writes
into the sweep folder
- `report.md`: one row per job (sampler, w, steps, network evaluations per image, sample
  count, FID, KID ± std, precision, recall, label fidelity where measured), the job with the
  lowest FID (per sample count) and the one with the highest label fidelity;
- `report_guidance.png`: FID, precision/recall and label fidelity (where measured) against w,
  one line per combination of the other swept overrides (the step count); against the steps
  where w is the same in every job;
- `report_steps.png`, where the jobs differ in network evaluations per image (a sweep over
  samplers, steps, guidance interval): FID and label fidelity against them (log x), one line
  per combination of the overrides other than `sampler.steps` (sampler, interval, w).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from diffusion_lab.figures.save import save_figure
from diffusion_lab.figures.sweeps import Line, swept_lines_figure
from diffusion_lab.reporting.sweeps import (
    METRICS,
    differing_note,
    differing_overrides,
    finished_jobs,
    job_number,
    job_overrides,
    row_labels,
    sweep_name,
)
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import atomic_path

FIGURE = "report_guidance.png"
STEPS_FIGURE = "report_steps.png"
# Below this many generated images FID is biased upward (the count papers report at).
PAPER_SAMPLES = 50_000
# The override that moves the jobs along each x axis of the figures.
AXIS_OVERRIDES = {"w": "w", "steps": "sampler.steps", "nfe": "sampler.steps"}


@dataclass(frozen=True)
class EvalJob:
    """One finished evaluate run: how its images were made and what they scored."""

    number: int
    label: str
    overrides: list[str]
    sampler: str
    w: float | str
    steps: int | str
    nfe: int | str
    samples: int
    fid: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    label_fidelity: float | None
    ceiling: float | None
    reference: str

    def setting(self) -> str:
        """`ddim, w=1.8, 50 steps`."""
        return f"{self.sampler}, w={self.w}, {self.steps} steps"


def read_eval_job(folder: Path, overrides: list[str], label: str) -> EvalJob:
    """A job from its metrics.json; DataError where it is not an evaluate job's."""
    path = folder / METRICS
    try:
        metrics = json.loads(path.read_text())
        protocol = metrics["protocol"]
        return EvalJob(
            number=job_number(folder)[0],
            label=label,
            overrides=overrides,
            sampler=str(protocol["sampler"]),
            w=protocol["w"],
            steps=protocol["steps"],
            # Jobs evaluated before nfe was recorded, and sets whose manifest lacks it.
            nfe=protocol.get("nfe", "unknown"),
            samples=int(protocol["num_generated"]),
            fid=float(metrics["quality/fid"]),
            kid=float(metrics["quality/kid"]),
            kid_std=float(metrics["quality/kid_std"]),
            precision=float(metrics["quality/precision"]),
            recall=float(metrics["quality/recall"]),
            label_fidelity=metrics.get("quality/label_fidelity"),
            ceiling=metrics.get("quality/label_fidelity_ceiling"),
            reference=f"{protocol['reference']}; features {protocol['features']}",
        )
    except json.JSONDecodeError:
        raise DataError(
            f"{path}: not valid JSON (a job still writing, or a damaged file)"
        ) from None
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"{path}: not a finished evaluate job's metrics ({type(err).__name__}: {err})"
        ) from None


def x_axis(jobs: list[EvalJob]) -> str:
    """`w` where the jobs differ in w, else `steps` where they differ in steps, else `w`."""
    if len({j.w for j in jobs}) == 1 and len({j.steps for j in jobs}) > 1:
        return "steps"
    return "w"


def line_labels(jobs: list[EvalJob], axis: str) -> list[str]:
    """Each job's line: the overrides other than the x axis's that differ between jobs."""
    differing = differing_overrides([j.overrides for j in jobs])
    differing.pop(AXIS_OVERRIDES[axis], None)
    return [
        " ".join(f"{key}={'(unset)' if v[i] is None else v[i]}" for key, v in differing.items())
        or "all jobs"
        for i in range(len(jobs))
    ]


def lines_of(
    jobs: list[EvalJob], axis: str, value: Callable[[EvalJob], float | None]
) -> dict[str, Line]:
    """Per line label, (x, value) sorted by x; jobs without the value or a numeric x left out."""
    points: dict[str, list[tuple[float, float]]] = {}
    for job, label in zip(jobs, line_labels(jobs, axis), strict=True):
        x, y = getattr(job, axis), value(job)
        if y is not None and isinstance(x, int | float):
            points.setdefault(label, []).append((x, y))
    return {label: tuple(zip(*sorted(p), strict=True)) for label, p in points.items()}


def sample_counts(jobs: list[EvalJob]) -> list[int]:
    """The distinct numbers of generated images per job, smallest first."""
    return sorted({j.samples for j in jobs})


def guidance_figure(jobs: list[EvalJob], title: str) -> Figure:
    """FID, precision/recall and label fidelity (%, where measured) against w (or steps)."""
    axis = x_axis(jobs)
    panels = {
        "FID": {"FID": lines_of(jobs, axis, lambda j: j.fid)},
        "precision / recall": {
            "precision": lines_of(jobs, axis, lambda j: j.precision),
            "recall": lines_of(jobs, axis, lambda j: j.recall),
        },
    }
    fidelity = lines_of(
        jobs, axis, lambda j: None if j.label_fidelity is None else 100 * j.label_fidelity
    )
    if fidelity:
        panels["label fidelity (%)"] = {"label fidelity": fidelity}
    counts = ", ".join(f"{n:,}" for n in sample_counts(jobs))
    note = f"{counts} generated images per job: FID compares only at the same sample count"
    figure = swept_lines_figure(axis, panels, f"{title}\n{note}")
    figure.axes[1].set_ylim(-0.03, 1.03)  # precision and recall are shares
    return figure


def has_cost_axis(jobs: list[EvalJob]) -> bool:
    """Whether jobs with the same w differ in network evaluations per image (a sweep over w
    alone moves them too, between 1 and 2 per step, but has its own figure)."""
    return any(
        len({j.nfe for j in jobs if j.w == w and isinstance(j.nfe, int)}) > 1
        for w in {j.w for j in jobs}
    )


def log_x(ax: Axes) -> None:
    """A log x axis that keeps the ticks at the values drawn."""
    ticks = list(ax.get_xticks())
    ax.set_xscale("log")
    ax.set_xticks(ticks, labels=[f"{v:g}" for v in ticks])
    ax.minorticks_off()


def steps_figure(jobs: list[EvalJob], title: str) -> Figure:
    """FID and label fidelity (%, where measured) against network evaluations per image."""
    panels = {"FID": {"FID": lines_of(jobs, "nfe", lambda j: j.fid)}}
    fidelity = lines_of(
        jobs, "nfe", lambda j: None if j.label_fidelity is None else 100 * j.label_fidelity
    )
    if fidelity:
        panels["label fidelity (%)"] = {"label fidelity": fidelity}
    counts = ", ".join(f"{n:,}" for n in sample_counts(jobs))
    note = f"{counts} generated images per job: FID compares only at the same sample count"
    figure = swept_lines_figure("network evaluations per image", panels, f"{title}\n{note}")
    for ax in figure.axes:
        log_x(ax)
    return figure


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def table_lines(jobs: list[EvalJob]) -> list[str]:
    """The markdown table: one row per job."""
    fidelity = any(j.label_fidelity is not None for j in jobs)
    header = (
        "| job | overrides | sampler | w | steps | nfe | samples | FID | KID | precision | recall |"
    )
    lines = [header + (" label fidelity (%) |" if fidelity else "")]
    lines.append("|" + " --- |" * (header.count("|") - 1 + fidelity))
    for j in jobs:
        row = (
            f"| {j.number} | `{j.label}` | {j.sampler} | {j.w} | {j.steps} | {j.nfe} | {j.samples} "
            f"| {j.fid:.2f} | {j.kid:.4f} ± {j.kid_std:.4f} | {j.precision:.3f} | {j.recall:.3f} |"
        )
        lines.append(row + (f" {percent(j.label_fidelity)} |" if fidelity else ""))
    return lines


def best_lines(jobs: list[EvalJob]) -> list[str]:
    """Which job has the lowest FID (per sample count) and the highest label fidelity."""
    lines = []
    for count in sample_counts(jobs):
        best = min((j for j in jobs if j.samples == count), key=lambda j: j.fid)
        lines.append(
            f"Lowest FID at {count:,} generated images: job {best.number} (`{best.label}`, "
            f"{best.setting()}): FID {best.fid:.2f}."
        )
    measured = [j for j in jobs if j.label_fidelity is not None]
    if measured:
        best = max(measured, key=lambda j: j.label_fidelity)
        ceiling = "" if best.ceiling is None else f" (real test images: {percent(best.ceiling)} %)"
        lines.append(
            f"Highest label fidelity: job {best.number} (`{best.label}`, {best.setting()}): "
            f"{percent(best.label_fidelity)} %{ceiling}."
        )
    return lines


def report_markdown(sweep_dir: Path, jobs: list[EvalJob], figures: list[str]) -> str:
    """report.md: the protocol, the table, the best jobs and the figures."""
    references = "; ".join(dict.fromkeys(j.reference for j in jobs))
    intro = (
        f"{len(jobs)} evaluate jobs against {references}. FID is biased upward below "
        f"{PAPER_SAMPLES:,} generated images: compare only rows with the same sample count. "
        "KID is the mean ± std over its subsets; label fidelity is the reference classifier's "
        "accuracy on the generated images; nfe: network evaluations per image (2 for a guided "
        "step, 1 for an unguided one)."
    )
    return (
        "\n\n".join(
            [
                f"# Evaluate sweep {sweep_name(sweep_dir)}",
                intro,
                "\n".join(table_lines(jobs)),
                "\n".join(f"- {line}" for line in best_lines(jobs)),
                *(f"![{name.removesuffix('.png')}]({name})" for name in figures),
            ]
        )
        + "\n"
    )


def report_evaluate_sweep(sweep_dir: Path, folders: list[Path]) -> list[Path]:
    """Write report.md and report_guidance.png into `sweep_dir` and print the table and the
    best jobs; returns the paths written."""
    folders = finished_jobs(sweep_dir, folders, needs=(METRICS,))
    overrides = [job_overrides(f) for f in folders]
    labels = row_labels(overrides)
    jobs = [
        read_eval_job(folder, job, label)
        for folder, job, label in zip(folders, overrides, labels, strict=True)
    ]
    title = f"{sweep_name(sweep_dir)} ({differing_note(overrides)}): sample quality"
    figures = [save_figure(guidance_figure(jobs, title), sweep_dir / FIGURE)]
    if has_cost_axis(jobs):
        figures.append(save_figure(steps_figure(jobs, title), sweep_dir / STEPS_FIGURE))
    report = sweep_dir / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text(report_markdown(sweep_dir, jobs, [f.name for f in figures]))
    print("\n".join([*table_lines(jobs), "", *best_lines(jobs)]))
    return [report, *figures]
