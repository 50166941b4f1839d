"""Reading a Hydra sweep folder: its job folders, what ran them and with which overrides."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from diffusion_lab.config.folders import job_number
from diffusion_lab.utils.errors import UserFacingError

FINAL_CKPT = Path("checkpoints") / "last.ckpt"
METRICS = Path("metrics.json")
# metrics.json keys of sample-quality metrics (FID, KID, precision, recall, label fidelity).
QUALITY_PREFIX = "quality/"


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Sub-folders that Hydra ran a job in (they hold `.hydra/`), in job-number order."""
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()]
    return sorted(jobs, key=job_number)


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


def differing_overrides(overrides: list[list[str]]) -> dict[str, list[str | None]]:
    """Per override key whose value is not the same in every job: each job's value (None where
    the job does not set it); keys in the order the jobs name them."""
    values = [dict(o.split("=", 1) if "=" in o else (o, "") for o in job) for job in overrides]
    keys = dict.fromkeys(key for job in values for key in job)
    table = {key: [job.get(key) for job in values] for key in keys}
    return {key: column for key, column in table.items() if len(set(column)) > 1}


def differing_note(overrides: list[list[str]]) -> str:
    """What tells the jobs apart, for figure titles: `beta_T = 0.01, 0.02; seed = 1, 2`."""
    differing = differing_overrides(overrides)
    if not differing:
        return "one job" if len(overrides) == 1 else "jobs with the same overrides"
    parts = [
        f"{key} = " + ", ".join(dict.fromkeys("(unset)" if v is None else v for v in values))
        for key, values in differing.items()
    ]
    return "; ".join(parts)


def swept_axis(overrides: list[list[str]]) -> tuple[str, list[float] | list[str]]:
    """The x axis of a per-job figure: the one override that differs (its values as numbers
    where they all are), else every job's differing overrides as labels."""
    differing = differing_overrides(overrides)
    if len(differing) != 1:
        return "job", row_labels(overrides)
    key, values = next(iter(differing.items()))
    try:
        return key, [float(v) for v in values]
    except (TypeError, ValueError):
        return key, [str(v) for v in values]


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation; None for a single value, which has no spread."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def sweep_name(sweep_dir: Path) -> str:
    """`DATE/TIME` of a Hydra sweep folder, short enough for a figure title."""
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def metric_cell(value: object) -> str:
    """A number with 4 significant digits; anything else as written."""
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def metrics_table(labels: list[str], metrics: list[dict[str, float]]) -> str:
    """A markdown table: one row per job, one column per metric key of any job, the sample
    quality (`quality/*`) columns first."""
    keys = sorted(set().union(*metrics), key=lambda k: (not k.startswith(QUALITY_PREFIX), k))
    lines = ["| job | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
    for label, values in zip(labels, metrics, strict=True):
        cells = [metric_cell(values[k]) if k in values else "" for k in keys]
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finished_jobs(
    sweep_dir: Path, jobs: list[Path], needs: Sequence[Path] = (METRICS, FINAL_CKPT)
) -> list[Path]:
    """Jobs that hold every file of `needs` (a training job: metrics.json and its final
    checkpoint); a note on stderr for each other job."""
    done = [j for j in jobs if all((j / path).is_file() for path in needs)]
    files = " and ".join(str(path) for path in needs)
    if not done:
        raise UserFacingError(
            f"{sweep_dir}: none of its {len(jobs)} job(s) has finished ({files}); nothing to report"
        )
    for job in sorted(set(jobs) - set(done)):
        print(
            f"note: skipping {job}: unfinished (no {files.replace(' and ', ' or ')})",
            file=sys.stderr,
        )
    return done
