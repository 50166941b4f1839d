"""The report of an `hparams_search=` sweep (an Optuna search; see conf/hparams_search/).

It reads the sweep folder, not the Optuna storage: `multirun.yaml` (the objective, its
direction, the searched keys and their default values) and each job folder (a job's number is
its trial number; its overrides hold the trial's setting, its metrics.json the objective). It
writes into the sweep folder:

- `search_history.png`: the objective of every finished trial against its number, with the
  best so far;
- `search_slices.png`: the objective against each searched key (a slice plot), trials coloured
  by number, the best and the defaults marked;
- `search_best_vs_defaults.png`: the best trial's samples beside those of the trial that ran
  the defaults (same noise, labels and generator seed);
- `report.md`: the table of trials, the best setting and whether it beats the defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.config.folders import job_number
from diffusion_lab.figures.grids import sweep_grid_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.reporting.sweeps import FINAL_CKPT, METRICS, job_overrides, sweep_name
from diffusion_lab.reporting.training_sweep import sample_job
from diffusion_lab.utils.errors import UserFacingError
from diffusion_lab.utils.files import atomic_path

SWEEP_CONFIG = "multirun.yaml"


def is_search(sweep_dir: Path) -> bool:
    """Whether an Optuna sweeper ran the sweep (its multirun.yaml names the sweeper)."""
    path = sweep_dir / SWEEP_CONFIG
    if not path.is_file():
        return False
    target = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper._target_", default="")
    return "optuna" in str(target).lower()


@dataclass
class Search:
    """What was searched: objective, direction, keys (with log scale) and their defaults."""

    objective: str
    minimize: bool
    log_scale: dict[str, bool]
    defaults: dict[str, Any]

    @classmethod
    def load(cls, sweep_dir: Path) -> Search:
        config = OmegaConf.load(sweep_dir / SWEEP_CONFIG)
        lines = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        lines += [str(o) for o in config.hydra.overrides.task]
        sweeps = [
            o for o in OverridesParser.create().parse_overrides(lines) if o.is_sweep_override()
        ]
        log_scale = {o.get_key_element(): "log" in getattr(o.value(), "tags", ()) for o in sweeps}
        defaults = {key: default_value(config, key) for key in log_scale}
        direction = str(config.hydra.sweeper.get("direction", "minimize"))
        return cls(str(config.optimized_metric), direction == "minimize", log_scale, defaults)

    def better(self, a: float, b: float) -> bool:
        return a < b if self.minimize else a > b


def default_value(config: DictConfig, key: str) -> Any:
    """The sweep config's value of a searched key (the setting it had before the search)."""
    return OmegaConf.select(config, key, default=None, throw_on_missing=False)


@dataclass
class Trial:
    """One job of the search: its trial number, setting and objective (None: unfinished)."""

    number: int
    job: Path
    params: dict[str, Any]
    value: float | None


def read_trials(search: Search, jobs: list[Path]) -> list[Trial]:
    """The search's jobs as trials, in trial order."""
    trials = []
    for job in sorted(jobs, key=job_number):
        overrides = dict(o.split("=", 1) for o in job_overrides(job) if "=" in o)
        params = {key: parse_value(overrides.get(key)) for key in search.log_scale}
        metrics_file = job / METRICS
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        value = metrics.get(search.objective) if (job / FINAL_CKPT).is_file() else None
        trials.append(Trial(job_number(job)[0], job, params, value))
    return trials


def parse_value(text: str | None) -> Any:
    """An override's value as a number where it is one."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return text


def same_setting(params: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether a trial's setting is the defaults (numbers to a relative 1e-9)."""
    for key, value in params.items():
        default = defaults.get(key)
        if isinstance(value, float) and isinstance(default, int | float):
            if not math.isclose(value, default, rel_tol=1e-9):
                return False
        elif value != default:
            return False
    return True


def history_figure(search: Search, trials: list[Trial], title: str) -> Figure:
    """The objective of each finished trial against its number, and the best so far."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    done = [t for t in trials if t.value is not None]
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="trial")
    best_steps, best = [], None
    for trial in done:
        if best is None or search.better(trial.value, best):
            best = trial.value
        best_steps.append(best)
    ax.step([t.number for t in done], best_steps, where="post", label="best so far")
    defaults = [t for t in done if same_setting(t.params, search.defaults)]
    if defaults:
        ax.plot(defaults[0].number, defaults[0].value, "*", ms=14, label="defaults")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(search.objective)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def slices_figure(search: Search, trials: list[Trial], best: Trial, title: str) -> Figure:
    """One panel per searched key: the objective of each finished trial against its value."""
    keys = list(search.log_scale)
    fig = Figure(figsize=(4.2 * len(keys) + 0.8, 3.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    done = [t for t in trials if t.value is not None]
    for ax, key in zip(axes, keys, strict=True):
        points = ax.scatter(
            [t.params[key] for t in done],
            [t.value for t in done],
            c=[t.number for t in done],
            cmap="viridis",
        )
        ax.plot(best.params[key], best.value, "o", ms=14, mfc="none", mec="red", label="best")
        if search.defaults.get(key) is not None:
            ax.axvline(search.defaults[key], color="grey", ls="--", label="default")
        if search.log_scale[key]:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(search.objective)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.colorbar(points, ax=axes.tolist(), label="trial")
    fig.suptitle(title, fontsize=9)
    return fig


def setting(trial: Trial) -> str:
    """`beta_1=0.0001, beta_T=0.028` with 4 significant digits."""
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
    )


def grid_figure(
    search: Search, best: Trial, defaults: Trial | None, args: Any, title: str
) -> Figure:
    """The best trial's samples above the defaults trial's, from the same noise."""
    rows, names = [], ()
    for label, trial in (("best", best), ("defaults", defaults)):
        if trial is None:
            continue
        device = torch.device(args.device)
        images, names, _ = sample_job(trial.job / FINAL_CKPT, args.per_class, args.seed, device)
        lines = [f"{label}: trial {trial.number}", *setting(trial).split(", ")]
        lines.append(f"{search.objective} {trial.value:.4g}")
        rows.append(("\n".join(lines), images))
    return sweep_grid_figure(rows, names, title)


def verdict(search: Search, best: Trial, defaults: Trial | None) -> str:
    """Whether the best setting beats the defaults on the objective, in one sentence."""
    if defaults is None:
        return "No finished trial ran the defaults, so the search does not compare with them."
    if best.number == defaults.number or not search.better(best.value, defaults.value):
        return f"The defaults (trial {defaults.number}) are the best setting found."
    gain = abs(best.value - defaults.value)
    return (
        f"The best setting beats the defaults (trial {defaults.number}, "
        f"{search.objective} {defaults.value:.4g}) by {gain:.4g}, "
        f"from one training run each (seed and noise shared)."
    )


def cell(value: Any) -> str:
    """A setting's value in the table; `?` where the trial was killed before Hydra recorded it."""
    if value is None:
        return "?"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(search: Search, trials: list[Trial], best: Trial) -> str:
    """A markdown table: one row per trial, its setting and objective."""
    keys = list(search.log_scale)
    lines = [
        f"| trial | {' | '.join(keys)} | {search.objective} | |",
        "| --- " * (len(keys) + 3) + "|",
    ]
    for trial in trials:
        cells = [cell(v) for v in trial.params.values()]
        value = f"{trial.value:.4g}" if trial.value is not None else "unfinished"
        notes = ["best"] if trial is best else []
        notes += ["defaults"] if same_setting(trial.params, search.defaults) else []
        lines.append(f"| {trial.number} | {' | '.join(cells)} | {value} | {', '.join(notes)} |")
    return "\n".join(lines)


def report_hparams_search(sweep_dir: Path, jobs: list[Path], args: Any) -> list[Path]:
    """Figures and report.md of a search; the files written."""
    search = Search.load(sweep_dir)
    trials = read_trials(search, jobs)
    done = [t for t in trials if t.value is not None]
    if not done:
        raise UserFacingError(
            f"{sweep_dir}: none of its {len(trials)} trial(s) has finished with "
            f"{search.objective} in its metrics.json; nothing to report"
        )
    best = done[0]
    for trial in done[1:]:
        if search.better(trial.value, best.value):
            best = trial
    defaults = next((t for t in done if same_setting(t.params, search.defaults)), None)
    direction = "minimised" if search.minimize else "maximised"
    title = f"{sweep_name(sweep_dir)}: {search.objective} {direction}, {len(done)} trials"
    figures = {
        "search_history.png": history_figure(search, trials, title),
        "search_slices.png": slices_figure(search, trials, best, title),
        "search_best_vs_defaults.png": grid_figure(search, best, defaults, args, title),
    }
    written = [save_figure(figure, sweep_dir / name) for name, figure in figures.items()]
    images = "\n\n".join(f"![{name.removesuffix('.png')}]({name})" for name in figures)
    text = (
        f"# Search report: {sweep_dir}\n\n"
        f"{len(done)} of {len(trials)} trials finished; {search.objective} {direction}.\n\n"
        f"**Best: trial {best.number}**, {setting(best)}: {search.objective} "
        f"{best.value:.4g}. {verdict(search, best, defaults)}\n\n"
        f"{images}\n\n## Trials\n\n{trials_table(search, trials, best)}\n"
    )
    with atomic_path(sweep_dir / "report.md") as tmp:
        tmp.write_text(text)
    return [*written, sweep_dir / "report.md"]
