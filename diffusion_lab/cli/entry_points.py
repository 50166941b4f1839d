"""What every command shares: the Hydra entry point with its command-line check, the argparse
parser of the other commands, and the last line a command prints."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import hydra
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig

from diffusion_lab.cli.overrides import check_command_line
from diffusion_lab.cli.user_errors import report_user_errors
from diffusion_lab.config.source import CONFIG_PATH, config_source
from diffusion_lab.utils.errors import UserFacingError

R = TypeVar("R")


def hydra_main(
    config_name: str, check: Callable[[DictConfig], None] | None = None
) -> Callable[[Callable[[DictConfig], R]], Callable[[], None]]:
    """The entry point of a Hydra command: `@hydra.main` on the config `config_name` around the
    task, which reports user errors (`report_user_errors`).

    What Hydra itself would refuse after parsing the command line (an unknown key or config
    group option, bad override syntax, a run folder that cannot be made) is checked first, by
    composing the config as Hydra will, and reported the same way: one line, exit status 2.
    A single run's config also goes through `check`, the checks the task starts with that need
    no checkpoint, data or run folder: a bad value is refused before Hydra composes the config
    twice more and makes the run folder. (The task checks again: a sweep's jobs and the study
    reach it without this.)
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
                        args.config_name or config_name, args.overrides, args.multirun, check
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
