"""The Hydra sweeper behind `hparams_search=` (conf/hydra/sweeper/optuna_resumable.yaml).

Hydra finds sweepers only in the `hydra_plugins` namespace package, so it lives here. It wraps
the Optuna sweeper of hydra-optuna-sweeper (the `search` extra, imported only when a search
starts) and adds what a search of long training jobs needs:

- **Resume.** The study is kept in SQLite under the sweep folder. Rerunning the command with
  `hydra.sweep.dir=<that folder>` continues it: completed trials are kept (and inform TPE), a
  trial that the kill left running is marked failed and its setting queued again, and
  `n_trials` is the number of completed trials the study should reach.
- **Job folders numbered by trial.** A job's folder number is its Optuna trial number, so a
  resumed search continues the numbering instead of starting again at 0.
- **The defaults as the first trial.** With `defaults_first`, a new study first runs the
  config's own values of the searched keys (where they lie in the ranges), so the search says
  whether its best setting beats them on the same budget and metric.
- **Bad input in one line, before any trial:** an empty range (low >= high), a log range that
  does not start above 0, a missing package.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def fail(message: str) -> NoReturn:
    """Stop the search before any trial with `error: <message>` and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def searched(params: DictConfig | None, arguments: list[str]) -> dict[str, Override]:
    """The sweep overrides of the search (`hydra.sweeper.params`, then the command line's)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    parsed = OverridesParser.create().parse_overrides(lines)
    return {o.get_key_element(): o for o in parsed if o.is_sweep_override()}


def check_range(override: Override) -> None:
    """An interval or range with nothing in it (or a log interval reaching 0) stops the search."""
    value = override.value()
    text = override.input_line
    if isinstance(value, IntervalSweep):
        if not value.start < value.end:
            fail(f"{text}: empty range; low must be < high")
        if "log" in value.tags and value.start <= 0:
            fail(f"{text}: a log range must start above 0")
    if isinstance(value, RangeSweep) and not list(override.sweep_iterator()):
        fail(f"{text}: empty range; it holds no value")


def contains(override: Override, value: Any) -> bool:
    """Whether the search range of `override` holds `value` (a config's default)."""
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return isinstance(value, (int, float)) and sweep.start <= value <= sweep.end
    return value in list(override.sweep_iterator())


# The modules a search imports, and the pip package of each (all in the `search` extra).
PACKAGES = {"optuna": "optuna", "hydra_plugins.hydra_optuna_sweeper": "hydra-optuna-sweeper"}


def import_optuna() -> tuple[Any, Any]:
    """(optuna, the hydra-optuna-sweeper module); one line naming the package where missing."""
    try:
        import optuna
        from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper
    except ImportError as err:
        package = PACKAGES.get(err.name or "", err.name)
        fail(
            f"hparams_search needs the package {package}, which is not installed: "
            'pip install -e ".[search]"'
        )
    return optuna, optuna_sweeper


class ResumableOptunaSweeper(Sweeper):
    """hydra-optuna-sweeper's OptunaSweeper, resumable and numbered by trial (see the module)."""

    def __init__(
        self,
        sampler: DictConfig,
        direction: str,
        storage: str,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        defaults_first: bool = True,
    ) -> None:
        self.settings = {
            "sampler": sampler,
            "direction": direction,
            "storage": storage,
            "study_name": study_name,
            "n_trials": n_trials,
            "n_jobs": n_jobs,
            "max_failure_rate": max_failure_rate,
            "params": params,
        }
        self.defaults_first = defaults_first

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        n_trials = self.settings["n_trials"]
        if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
            fail(f"hydra.sweeper.n_trials={n_trials!r}: must be a positive integer")
        self.optuna, optuna_sweeper = import_optuna()
        # The sampler is built in `sweep`, once the study (and so the seed to use) is known.
        settings = {**self.settings, "sampler": None}
        wrapped = optuna_sweeper.OptunaSweeper(
            **settings, search_space=None, custom_search_space=None
        )
        wrapped.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.impl = wrapped.sweeper
        self.config = config

    def sweep(self, arguments: list[str]) -> None:
        space = searched(self.settings["params"], arguments)
        for override in space.values():
            check_range(override)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not the folder
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self.optuna.create_study(
            study_name=self.settings["study_name"],
            storage=self.settings["storage"],
            direction=self.settings["direction"],
            load_if_exists=True,
        )
        self.impl.sampler = self.sampler(len(study.trials))
        if not study.trials and self.defaults_first:
            self.queue_defaults(study, space)
        self.retry_interrupted(study)
        completed = len(self.trials(study, "COMPLETE"))
        # Trial numbers are contiguous and queued trials are asked first: the next job is the
        # first queued trial, else a new one.
        first = min((t.number for t in self.trials(study, "WAITING")), default=len(study.trials))
        self.impl.job_idx = first
        self.impl.n_trials = max(self.settings["n_trials"] - completed, 0)
        log.info(
            f"Search {study.study_name}: {completed} of {self.settings['n_trials']} trials "
            f"completed; running {self.impl.n_trials} more from trial {first}"
        )
        try:
            self.impl.sweep(arguments)
        except ValueError:
            # Optuna has no best trial to report when every trial failed ("Record does not
            # exist."); the sweep's failure report (hydra.callbacks.sweep_failures) says why.
            if self.trials(study, "COMPLETE") or self.impl.job_idx == first:
                raise
            log.error(f"Search {study.study_name}: no trial completed")

    def sampler(self, trials_so_far: int) -> Any:
        """The configured sampler; a seeded one is seeded with seed + the study's trial count,
        else a resumed search would draw the settings of its first run again."""
        sampler = self.settings["sampler"]
        seed = sampler.get("seed")
        return instantiate(sampler, **({} if seed is None else {"seed": seed + trials_so_far}))

    def trials(self, study: Any, state: str) -> list[Any]:
        """The study's trials in one state (COMPLETE, WAITING, RUNNING, FAIL)."""
        states = (self.optuna.trial.TrialState[state],)
        return study.get_trials(deepcopy=False, states=states)

    def queue_defaults(self, study: Any, space: dict[str, Override]) -> None:
        """Make the config's values of the searched keys the new study's first trial."""
        defaults = {key: OmegaConf.select(self.config, key) for key in space}
        outside = [k for k, o in space.items() if not contains(o, defaults[k])]
        if outside:
            log.info(f"No defaults trial: {', '.join(outside)} lie outside the searched ranges")
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(defaults)

    def retry_interrupted(self, study: Any) -> None:
        """Trials a killed search left running: mark them failed and queue their settings."""
        for trial in self.trials(study, "RUNNING"):
            study.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)
            log.info(f"Trial {trial.number} was interrupted; its setting runs again")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", self.optuna.exceptions.ExperimentalWarning)
                study.enqueue_trial(trial.params)
