"""The record of the jobs of a sweep that failed: `failure.json` in each failed job's folder,
`failures.json` in the sweep folder at its end (the `SweepFailures` Hydra callback)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from diffusion_lab.config.folders import job_number
from diffusion_lab.utils.errors import UserFacingError
from diffusion_lab.utils.files import write_json

# A failed sweep job's folder holds this record; the sweep folder gets all of them at its end.
JOB_FAILURE_FILE = "failure.json"
SWEEP_FAILURES_FILE = "failures.json"


# (sweep folder, error line) already printed: the jobs of a sweep that share a bad input (a
# preset run without a key it needs) print its line once, not once per job.
_printed_errors: set[tuple[str, str]] = set()


def record_job_failure(err: Exception, user_error: UserFacingError | str | None) -> Path:
    """Report a sweep job's failure on stderr (one line, or a traceback for a bug) and write
    `failure.json` into its folder: folder name, overrides and the one-line error."""
    hydra_cfg = HydraConfig.get()
    if user_error is not None:
        line = f"error: {user_error}"
        if (hydra_cfg.sweep.dir, line) not in _printed_errors:
            print(line, file=sys.stderr)
            _printed_errors.add((hydra_cfg.sweep.dir, line))
    else:
        traceback.print_exception(err)
        first = str(err).strip().splitlines()
        line = f"{type(err).__name__}: {first[0]}" if first else type(err).__name__
    job_dir = Path(hydra_cfg.runtime.output_dir)
    record = {
        "job": job_dir.name,
        "overrides": list(hydra_cfg.overrides.task),
        "error": line,
        "user_error": user_error is not None,
    }
    return write_json(record, job_dir / JOB_FAILURE_FILE)


def job_failures(sweep_dir: Path) -> list[dict[str, Any]]:
    """The failure records of a sweep's jobs, in job-number order."""
    records = []
    jobs = sorted((p.parent for p in Path(sweep_dir).glob(f"*/{JOB_FAILURE_FILE}")), key=job_number)
    for path in (job / JOB_FAILURE_FILE for job in jobs):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            records.append({"job": path.parent.name, "overrides": [], "error": "unreadable record"})
    return records


class SweepFailures(Callback):
    """Hydra callback (conf/*.yaml, hydra.callbacks): after a sweep whose jobs failed, write
    failures.json into the sweep folder and name the failed jobs in one line; exit status 2
    when every failure was bad input (a UserFacingError), else 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = job_failures(sweep_dir)
        if not failures:
            return
        jobs = sum(1 for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
        path = write_json({"jobs": jobs, "failed": failures}, sweep_dir / SWEEP_FAILURES_FILE)
        names = "" if len(failures) == jobs else f" ({', '.join(f['job'] for f in failures)})"
        summary = f"error: {len(failures)} of {jobs} sweep jobs failed{names}; see {path}"
        print(summary, file=sys.stderr)
        sys.exit(2 if all(f.get("user_error") for f in failures) else 1)
