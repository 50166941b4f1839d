"""Running the commands in tests, and checking the PNGs they write.

`run_command` runs a command in this process as its console script would (conftest.py offers it
as the `run_cli` fixture): the command's imports are paid once per test process instead of once
per call. `run_process` and `start_process` run `python` in a process of its own, for the tests
that need one: signals, two processes at once, DDP or Fabric spawning, an installed wheel.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import random
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from PIL import Image

REPO_ROOT = Path(__file__).parents[1]
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The one `error: ` line of a command refused with exit status 2."""
        assert self.returncode == 2, self.stderr[-3000:]
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr[-3000:]
        return lines[0]


def exit_status(code: object) -> int:
    """The exit status of `sys.exit(code)`, as the interpreter would set it."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Undo what a command changes for the rest of its process: environment variables
    (Lightning's seed_everything sets PL_GLOBAL_SEED), the root logger's handlers (Hydra's
    job logging points them at the job's .log and at this test's captured stdout), random
    states, torch's threads, matmul precision and default dtype, signal handlers, warning
    filters and Hydra's global state (the run's HydraConfig)."""
    environ = dict(os.environ)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    dtype = torch.get_default_dtype()
    handlers_by_signal = {signum: signal.getsignal(signum) for signum in SIGNALS}
    filters = list(warnings.filters)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)
        torch.set_default_dtype(dtype)
        for signum, handler in handlers_by_signal.items():
            if signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)
        warnings.filters[:] = filters
        HydraConfig.instance().cfg = None
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()


def run_command(
    command: str,
    args: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    cwd: Path | None = None,
) -> CommandResult:
    """`python -m diffusion_lab.COMMAND ARGS` in this process, from `cwd` when given.

    sys.argv is the module's file and ARGS, as `python -m` sets it, and every command's main()
    reads it. An exception other than SystemExit is raised into the test (a subprocess would
    print its traceback and exit 1), so that a failing command shows where it failed.
    """
    module = importlib.import_module(f"diffusion_lab.{command}")
    capfd.readouterr()  # what the test printed before is not the command's output
    with monkeypatch.context() as patch, process_state_kept():
        patch.setattr(sys, "argv", [module.__file__, *args])
        if cwd is not None:
            patch.chdir(cwd)
        try:
            module.main()
            status = 0
        except SystemExit as exit_:
            status = exit_status(exit_.code)
            if not isinstance(exit_.code, int | None):
                print(exit_.code, file=sys.stderr)
    out, err = capfd.readouterr()
    return CommandResult(status, out, err)


def run_process(
    *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python ARGS` in a process of its own, importing this tree's diffusion_lab (the shared
    virtual environment's editable install may point at another checkout)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_process(*args: str, cwd: Path = REPO_ROOT, **popen: object) -> subprocess.Popen:
    """`python ARGS` started in a process of its own and left running (to be signalled, or
    to run beside another); its output is piped as text unless `popen` says otherwise."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=process_env(), **popen)


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this tree first on PYTHONPATH, plus `extra`."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def dead_pid() -> int:
    """A process id that no process has: the kernel hands out pids below pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def png_pixels(path: Path) -> np.ndarray:
    """The RGB pixels of a PNG file, which must decode and show something: a figure or grid of
    one flat colour is blank. (Every PNG the commands write is a matplotlib figure cropped to
    what it draws, so its size in pixels is not fixed.)"""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path.name}: {image.format}"
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1, f"{path.name} is blank"
    return pixels
