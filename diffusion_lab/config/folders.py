"""The names of run and sweep-job folders, which conf/*.yaml compose through resolvers
(`dl_job_name`, `dl_run_dir`, `dl_name_or`; registered by `config.source`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import ListConfig

# Sweep job folders are TensorBoard's run names: keep them short and safe in any file system.
JOB_NAME_MAX = 80
UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._,=+-]")


def job_folder_name(num: int | str, overrides: str = "") -> str:
    """A sweep job's folder: its number (for order and uniqueness), then its overrides, capped."""
    name = f"{num}_{overrides}" if overrides else str(num)
    return UNSAFE_IN_NAMES.sub("_", name)[:JOB_NAME_MAX]


def resumed_run_dir(ckpt_path: str | None, new_dir: str) -> str:
    """A resumed run's folder: the run holding `checkpoints/<ckpt_path>`; otherwise `new_dir`.

    Continuing in that folder keeps one TensorBoard run, one loss curve and one checkpoints/.
    """
    if ckpt_path is not None and Path(ckpt_path).parent.name == "checkpoints":
        return str(Path(ckpt_path).parent.parent)
    return new_dir


def job_number(job: Path) -> tuple[int, str]:
    """Sort key of a job folder: its leading number (`12_beta_T=0.01`, or `12` before names)."""
    number = job.name.split("_", 1)[0]
    return (int(number), job.name) if number.isdigit() else (sys.maxsize, job.name)


def name_or(choice: Any, default: str) -> str:
    """A group choice as a folder name (`experiment=quickstart` -> `quickstart`, a list joined
    with `+`), or `default` where the group is unset."""
    if choice is None or str(choice) in ("None", "null"):
        return default
    text = "+".join(map(str, choice)) if isinstance(choice, (list, tuple, ListConfig)) else choice
    return UNSAFE_IN_NAMES.sub("_", str(text))[:JOB_NAME_MAX]
