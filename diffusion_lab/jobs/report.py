"""What `python -m diffusion_lab.report SWEEP_DIR` does: find the jobs of the sweep, list the
failed ones, tell what kind of sweep ran the others, and hand them to its reporter in
`diffusion_lab.reporting`."""

from __future__ import annotations

import sys
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import torch

from diffusion_lab.cli.entry_points import print_summary
from diffusion_lab.cli.sweep_failures import job_failures
from diffusion_lab.config.checks import require_gpu_if_asked
from diffusion_lab.reporting import (
    is_search,
    job_dirs,
    job_kind,
    report_evaluate_sweep,
    report_hparams_search,
    report_training_sweep,
    summarize_classify_sweep,
)
from diffusion_lab.utils.errors import UserFacingError
from diffusion_lab.utils.files import atomic_path


def report_training(sweep_dir: Path, jobs: list[Path], args: Namespace) -> None:
    """Sample every finished training job from the same noise; write grid, losses and table."""
    device = torch.device(args.device)
    report_training_sweep(sweep_dir, jobs, args.per_class, args.seed, device)


def report_classify(sweep_dir: Path, jobs: list[Path], args: Namespace) -> None:
    """Mean ± std test accuracy per mode and per-class differences of a classifier sweep."""
    written = summarize_classify_sweep(sweep_dir)
    print("wrote " + ", ".join(str(p) for p in written))


def report_search(sweep_dir: Path, jobs: list[Path], args: Namespace) -> None:
    """Objective per trial, slices per searched key, best trial's samples beside the defaults'."""
    written = report_hparams_search(sweep_dir, jobs, args)
    print("wrote " + ", ".join(str(p) for p in written))


def report_evaluate(sweep_dir: Path, jobs: list[Path], args: Namespace) -> None:
    """FID, KID, precision/recall and label fidelity per job of a sweep over w and steps."""
    written = report_evaluate_sweep(sweep_dir, jobs)
    print("wrote " + ", ".join(str(p) for p in written))


# One reporter per kind of sweep, keyed by the entry point that ran its jobs.
REPORTERS: dict[str, Callable[[Path, list[Path], Namespace], None]] = {
    "train": report_training,
    "classify": report_classify,
    "evaluate": report_evaluate,
    "search": report_search,
}


def failure_line(failure: dict) -> str:
    """One failed job: folder, overrides and its one-line error."""
    overrides = " ".join(failure.get("overrides", [])) or "(defaults)"
    return f"failed: {failure['job']} ({overrides}): {failure['error']}"


def append_failures(report_md: Path, failures: list[dict]) -> None:
    """End report.md with a list of the sweep's failed jobs."""
    lines = [f"- `{failure_line(f).removeprefix('failed: ')}`" for f in failures]
    text = report_md.read_text() if report_md.is_file() else ""
    with atomic_path(report_md) as tmp:
        tmp.write_text(f"{text}\n## Failed jobs ({len(failures)})\n\n" + "\n".join(lines) + "\n")


def recorded(jobs: list[Path]) -> list[Path]:
    """The jobs whose config Hydra recorded (all of them where none did): a job killed before
    Hydra wrote it, as a search trial stopped as it started, has none."""
    return [job for job in jobs if (job / ".hydra" / "hydra.yaml").is_file()] or jobs


def without_unrecorded(jobs: list[Path]) -> list[Path]:
    """`recorded(jobs)`, with a note for each job it skips."""
    kept = recorded(jobs)
    for job in sorted(set(jobs) - set(kept)):
        print(f"note: skipping {job}: stopped before Hydra recorded its config", file=sys.stderr)
    return kept


def report(args: Namespace) -> None:
    """Find the jobs of SWEEP_DIR, list the failed ones, detect what ran the others, and hand
    them to that reporter."""
    try:
        torch.device(args.device)
    except RuntimeError:
        raise UserFacingError(
            f"--device={args.device!r}: not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise UserFacingError(f"{sweep_dir}: no such folder")
    require_gpu_if_asked("--device", args.device, "use --device cpu")
    jobs = job_dirs(sweep_dir)
    if not jobs:
        raise UserFacingError(f"{sweep_dir}: no job folders (sub-folders with .hydra/) in it")
    failures = job_failures(sweep_dir)
    for failure in failures:
        print(failure_line(failure))
    failed = {failure["job"] for failure in failures}
    jobs = [job for job in jobs if job.name not in failed]
    if not jobs:
        raise UserFacingError(f"{sweep_dir}: all {len(failed)} job(s) failed; nothing to report")
    kinds = sorted({job_kind(j) for j in recorded(jobs)})
    if len(kinds) > 1 or kinds[0] not in REPORTERS:
        raise UserFacingError(
            f"{sweep_dir}: jobs of {', '.join(kinds)}; a report exists for {', '.join(REPORTERS)}"
        )
    # A training sweep that an Optuna sweeper ran (hparams_search=) gets the search report.
    kind = "search" if kinds == ["train"] and is_search(sweep_dir) else kinds[0]
    # A search lists a trial killed as it started as unfinished; the other reports skip it.
    if kind != "search":
        jobs = without_unrecorded(jobs)
    REPORTERS[kind](sweep_dir, jobs, args)
    if failures:
        append_failures(sweep_dir / "report.md", failures)
    article = "an" if kind[0] in "aeiou" else "a"
    print_summary("report", f"{len(jobs)} jobs of {article} {kind} sweep", sweep_dir)
