"""User errors reported as one line and an exit status instead of a traceback; in a sweep job,
recorded instead (`cli.sweep_failures`) so that the sweep goes on."""

from __future__ import annotations

import errno
import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import OmegaConf

from diffusion_lab.cli.sweep_failures import record_job_failure
from diffusion_lab.utils.errors import UserFacingError

R = TypeVar("R")


def remove_empty_run_dir() -> None:
    """Delete the Hydra run folder of a run that stopped before writing, and the parent folders
    Hydra made for it (outputs/train/DATE/) once empty, up to the working directory.

    A sweep job's folder stays: it holds the job's failure record (`record_job_failure`).
    """
    # `--cfg` and `--help` leave a HydraConfig behind that never had an output folder.
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if OmegaConf.is_missing(hydra_cfg.runtime, "output_dir"):
        return
    run_dir = Path(hydra_cfg.runtime.output_dir)
    hydra_only = {hydra_cfg.output_subdir, f"{hydra_cfg.job.name}.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_only:
        shutil.rmtree(run_dir)
        remove_empty_parents(run_dir)


def remove_empty_parents(folder: Path) -> None:
    """Remove the empty folders above `folder` that lie inside the working directory."""
    cwd = Path.cwd().resolve()
    for parent in folder.resolve().parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            return
        parent.rmdir()


def user_error_in(err: BaseException) -> UserFacingError | OSError | None:
    """The UserFacingError or OSError behind `err`: itself, or what Hydra's instantiate wrapped."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err if isinstance(err, (UserFacingError, OSError)) else None


# OS errors the user fixes (a read-only or full output folder, missing permissions), with what to
# do; any other OSError is a bug and keeps its traceback.
USER_OS_ERRORS = {
    errno.EACCES: "no permission; choose a folder you can write to",
    errno.EPERM: "no permission; choose a folder you can write to",
    errno.EROFS: "read-only file system; choose a writable folder",
    errno.ENOSPC: "no space left on the device; free space or choose another folder",
    errno.EDQUOT: "disk quota exceeded; free space or choose another folder",
}


def os_error_line(err: OSError) -> str | None:
    """`PATH: what went wrong and what to do` for a USER_OS_ERRORS error, else None."""
    advice = USER_OS_ERRORS.get(err.errno)
    if advice is None:
        return None
    path = err.filename if err.filename is not None else "(a file of this run)"
    return f"{path}: {advice}"


def in_sweep_job() -> bool:
    """Whether this is a job of a --multirun sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_user_errors(task: Callable[..., R]) -> Callable[..., R | None]:
    """Turn a UserFacingError into `error: <message>` on stderr and exit status 2, no traceback.

    An error with an `exit_status` (an interrupted run: 128 + the signal) exits with that.

    Hydra wraps errors raised while instantiating (a datamodule checking its folder) in an
    InstantiationException; those are unwrapped and reported the same way. OS errors the user
    can fix (USER_OS_ERRORS) become one line naming the path. In a sweep job any failure but an
    interruption (SIGINT, SIGTERM) is recorded instead (`record_job_failure`) and the sweep goes
    on to its next job.
    """

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> R | None:
        try:
            return task(*args, **kwargs)
        except Exception as err:
            cause = user_error_in(err)
            line = os_error_line(cause) if isinstance(cause, OSError) else cause
            if in_sweep_job() and not hasattr(cause, "exit_status"):
                record_job_failure(err, line)
                return None
            if line is None:
                raise
            remove_empty_run_dir()
            print(f"error: {line}", file=sys.stderr)
            sys.exit(getattr(cause, "exit_status", 2))

    return wrapper
