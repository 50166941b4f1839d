"""A Hydra command line checked before Hydra runs it: Hydra's own refusals (an unknown key, a
config group option that does not exist, bad override syntax) and a run folder that cannot be
made become one UserFacingError with a hint, instead of Hydra's three lines or a traceback; so
does a bad value that a command's own check refuses, before Hydra composes the config again.

Every function here but `compose_user_config` runs inside an initialised Hydra
(`config.source.config_source()`), composing the config as the entry point will.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ValidationError

from diffusion_lab.config.source import config_source
from diffusion_lab.config.type_errors import type_error
from diffusion_lab.utils.errors import ConfigError
from diffusion_lab.utils.files import check_folder_can_be_made

# Hydra's words for a key that is not in the config (config_loader_impl).
UNKNOWN_KEY = re.compile(r"^Could not override '([^']+)'")
# Lines of Hydra's messages that say nothing about the user's input.
NOISE = re.compile(r"^(Config search path:|\tprovider=|See https://hydra\.cc)")


def parse(overrides: Sequence[str]) -> list[Override]:
    """The overrides parsed (a sweep over `glob(...)` lists the group's options); a syntax
    error names the override it is in."""
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    for text in overrides:
        try:
            parser.parse_override(text)
        except HydraException as err:
            raise ConfigError(f"{text}: {one_line(err)}") from None
    return parser.parse_overrides(list(overrides))


def one_line(err: Exception) -> str:
    """Hydra's message on one line, without its search path and links."""
    lines = (line.strip() for line in str(err).splitlines() if not NOISE.match(line))
    return " ".join(line for line in lines if line)


def is_group(key: str) -> bool:
    """Whether `key` (`trainer`, `hydra/launcher`) names a config group."""
    parent, _, name = key.rpartition("/")
    return name in GlobalHydra.instance().config_loader().list_groups(parent)


def key_paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config container, nodes and leaves."""
    if not isinstance(node, dict):
        return []
    paths = []
    for key, child in node.items():
        paths.append(f"{prefix}{key}")
        paths.extend(key_paths(child, f"{prefix}{key}."))
    return paths


def unknown_key_error(config_name: str, parsed: list[Override], key: str) -> ConfigError:
    """`foo=1: unknown key 'foo'; closest: ...; to add it: +foo=1`, the closest keys by difflib
    among those of the config that the command's group choices compose."""
    chosen = [o for o in parsed if not o.is_sweep_override() and is_group(o.key_or_group)]
    hydra = GlobalHydra.instance().hydra
    cfg = hydra.compose_config(config_name, [o.input_line for o in chosen], run_mode=RunMode.RUN)
    tree = OmegaConf.to_container(cfg, resolve=False)
    if not key.startswith("hydra."):
        tree.pop("hydra")
    closest = difflib.get_close_matches(key, key_paths(tree), n=3, cutoff=0.6)
    line = next((o.input_line for o in parsed if o.key_or_group == key), key)
    hint = f"closest: {', '.join(closest)}; " if closest else ""
    return ConfigError(f"{line}: unknown key '{key}'; {hint}to add it, pass +{line}")


def missing_option_error(err: MissingConfigException) -> ConfigError:
    """`trainer=tpu: no such option; available: cpu, ddp, default, gpu`."""
    if err.options is None or err.missing_cfg_file is None:
        return ConfigError(one_line(err))
    group, _, option = err.missing_cfg_file.rpartition("/")
    return ConfigError(f"{group}={option}: no such option; available: {', '.join(err.options)}")


def compose(config_name: str, overrides: Sequence[str], mode: RunMode) -> DictConfig:
    """The config as Hydra composes it for `mode`; its refusal as one ConfigError."""
    parsed = parse(overrides)
    try:
        return GlobalHydra.instance().hydra.compose_config(
            config_name, list(overrides), run_mode=mode, from_shell=True
        )
    except MissingConfigException as err:
        raise missing_option_error(err) from None
    except ConfigCompositionException as err:
        if isinstance(err.__cause__, ValidationError):
            raise type_error(config_name, err.__cause__) from None
        unknown = UNKNOWN_KEY.match(str(err))
        if unknown is None:
            raise ConfigError(one_line(err)) from None
        raise unknown_key_error(config_name, parsed, unknown.group(1)) from None
    except HydraException as err:
        raise ConfigError(one_line(err)) from None


def compose_user_config(name: str, overrides: Sequence[str], *fixed: str) -> DictConfig:
    """The config `name` for overrides typed on a non-Hydra command line (bench), plus `fixed`
    ones: Hydra's refusal (unknown key or group option, bad syntax) becomes one user error."""
    with config_source():
        return compose(name, [*overrides, *fixed], RunMode.RUN)


def check_sweep_options(parsed: list[Override]) -> None:
    """Every option a sweep names for a config group exists (Hydra would find out per job)."""
    loader = GlobalHydra.instance().config_loader()
    for override in parsed:
        if not (override.is_sweep_override() and override.is_discrete_sweep()):
            continue
        group = override.key_or_group
        if not is_group(group):
            continue
        options = loader.get_group_options(group)
        for option in override.sweep_string_iterator():
            if option not in options:
                available = ", ".join(options)
                raise ConfigError(f"{group}={option}: no such option; available: {available}")


def first_job(parsed: list[Override]) -> list[str]:
    """The overrides of a sweep's first job: each discrete sweep at its first value. A search
    space (interval, tag) or an empty range is the sweeper's to check; its key keeps its value."""
    lines = []
    for override in parsed:
        if not override.is_sweep_override():
            lines.append(override.input_line)
        elif override.is_discrete_sweep():
            first = next(iter(override.sweep_string_iterator()), None)
            if first is not None:
                lines.append(f"{override.get_key_element()}={first}")
    return lines


def check_command_line(
    config_name: str,
    overrides: Sequence[str],
    multirun: bool,
    check: Callable[[DictConfig], None] | None = None,
) -> None:
    """What Hydra would refuse about a run or sweep, and its output folder, as one ConfigError
    (or OSError) before Hydra starts; for a single run, also what the command's own `check`
    refuses of the config its task would receive.

    A sweep is checked as its first job, with every config group option it names; a key that
    exists only under another swept option is still found by Hydra, in that job. Its values are
    checked by each job, which records a refusal and lets the sweep go on.
    """
    if not multirun:
        cfg = compose(config_name, overrides, RunMode.RUN)
        with hydra_config_of(cfg):
            run_dir = cfg.hydra.run.dir
            check_folder_can_be_made("hydra.run.dir", run_dir)
        # An experiment may make itself a sweep (`hydra.mode: MULTIRUN`) without --multirun.
        if check is not None and cfg.hydra.mode != RunMode.MULTIRUN:
            with hydra_config_of(job_config(cfg, run_dir)):
                check(task_config(cfg))
        return
    cfg = compose(config_name, overrides, RunMode.MULTIRUN)
    parsed = parse(overrides)
    check_sweep_options(parsed)
    compose(config_name, first_job(parsed), RunMode.RUN)
    with hydra_config_of(cfg):
        check_folder_can_be_made("hydra.sweep.dir", cfg.hydra.sweep.dir)


def job_config(cfg: DictConfig, run_dir: str) -> DictConfig:
    """`cfg` with the output folder Hydra gives its job (`hydra.runtime.output_dir`), which
    keys such as `output_dir` interpolate."""
    with read_write(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(run_dir)
    return cfg


def task_config(cfg: DictConfig) -> DictConfig:
    """`cfg` as Hydra hands it to the task: without its `hydra` node (which HydraConfig holds)."""
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


@contextmanager
def hydra_config_of(cfg: DictConfig) -> Iterator[None]:
    """HydraConfig set to `cfg`'s Hydra node while its folders are resolved, as Hydra sets it
    before making them: a folder may name the run's choices (`${hydra:runtime.choices.x}`)."""
    instance = HydraConfig.instance()
    previous = instance.cfg
    instance.set_config(cfg)
    try:
        yield
    finally:
        instance.cfg = previous
