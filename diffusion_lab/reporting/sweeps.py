"""Reading a Hydra sweep folder: its job folders, what ran them and with which overrides."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from diffusion_lab.cli import job_number
from diffusion_lab.errors import UserFacingError

FINAL_CKPT = Path("checkpoints") / "last.ckpt"


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
