"""What every entry point shares: where the configs are, one-line reports of user errors, and
the record of the jobs of a sweep that failed."""

from __future__ import annotations

import argparse
import errno
import functools
import importlib.util
import json
import re
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import hydra
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from diffusion_lab.errors import UserFacingError
from diffusion_lab.files import atomic_path
from diffusion_lab.overrides import check_command_line
from diffusion_lab.overrides import compose as compose_checked

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# conf/ at the top of the repository, shipped in the wheel as this package (pyproject.toml).
CONFIG_PACKAGE = "diffusion_lab.conf"
CONFIG_URL = f"pkg://{CONFIG_PACKAGE}"


def config_path() -> str:
    """Hydra's config path: CONFIG_URL, or a checkout's conf/ where that names other files."""
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.find_spec(CONFIG_PACKAGE)
    origin = spec.origin if spec is not None else None
    # A checkout imported by PYTHONPATH alone has no diffusion_lab.conf, and another worktree's
    # editable install maps it to that worktree's conf/: read the conf/ beside this code.
    beside = origin is not None and Path(origin).resolve() == root / "conf" / "__init__.py"
    if (root / "pyproject.toml").is_file() and not beside:
        return str(root / "conf")
    return CONFIG_URL


CONFIG_PATH = config_path()

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


# Registered on import, before @hydra.main composes `hydra.run.dir`, `hydra.sweep.subdir`.
OmegaConf.register_new_resolver("dl_job_name", job_folder_name, replace=True)
OmegaConf.register_new_resolver("dl_run_dir", resumed_run_dir, replace=True)
OmegaConf.register_new_resolver("dl_name_or", name_or, replace=True)


def config_files() -> Traversable:
    """The folder of YAML files that CONFIG_PATH names."""
    return resources.files(CONFIG_PACKAGE) if CONFIG_PATH == CONFIG_URL else Path(CONFIG_PATH)


def config_source() -> initialize_config_dir | initialize_config_module:
    """Hydra's initialisation context for CONFIG_PATH, for composing outside an entry point."""
    if CONFIG_PATH == CONFIG_URL:
        return initialize_config_module(CONFIG_PACKAGE, version_base="1.3")
    return initialize_config_dir(CONFIG_PATH, version_base="1.3")


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the config `name` (train, generate, classify) as its entry point would."""
    with config_source():
        return compose(name, list(overrides))


def compose_user_config(name: str, overrides: Sequence[str], *fixed: str) -> DictConfig:
    """compose_config for overrides typed on a non-Hydra command line (bench), plus `fixed`
    ones: Hydra's refusal (unknown key or group option, bad syntax) becomes one user error."""
    with config_source():
        return compose_checked(name, [*overrides, *fixed], RunMode.RUN)


R = TypeVar("R")


def remove_empty_run_dir() -> None:
    """Delete the Hydra run folder of a run that stopped before writing, and the parent folders
    Hydra made for it (outputs/train/DATE/) once empty, up to the working directory.

    A sweep job's folder stays: it holds the job's failure record (`record_job_failure`).
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
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


def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], R]], Callable[[], None]]:
    """The entry point of a Hydra command: `@hydra.main` on the config `config_name` around the
    task, which reports user errors (`report_user_errors`).

    What Hydra itself would refuse after parsing the command line (an unknown key or config
    group option, bad override syntax, a run folder that cannot be made) is checked first, by
    composing the config as Hydra will, and reported the same way: one line, exit status 2.
    --help, --cfg, --info and the rest of Hydra's flags go to Hydra unchecked, and so does a
    command with another config folder (--config-dir, --config-path), which this check would
    not see.
    """

    def decorate(task: Callable[[DictConfig], R]) -> Callable[[], None]:
        app = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(
            report_user_errors(task)
        )

        @functools.wraps(task)
        def main() -> None:
            # Hydra's own parser (hydra.main uses it on the same sys.argv).
            args = get_args_parser().parse_args()
            shows = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
            other = args.config_dir or args.config_path or args.experimental_rerun
            if not shows and not other:
                with config_source():
                    report_user_errors(check_command_line)(
                        args.config_name or config_name, args.overrides, args.multirun
                    )
            app()

        return main

    return decorate


def print_summary(command: str, result: str, outputs: str | Path) -> None:
    """A command's last line: its key result and where its outputs are."""
    print(f"{command}: {result}; outputs in {outputs}", flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the non-Hydra commands: a bad argument is a UserFacingError (one line)."""

    def error(self, message: str) -> NoReturn:
        raise UserFacingError(f"{message} (see {self.prog} --help)")


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


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)
