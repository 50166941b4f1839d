"""Where the configs are, composing them outside an entry point, and the resolvers they name."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from hydra import compose, initialize_config_dir, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.config.folders import job_folder_name, name_or, resumed_run_dir
from diffusion_lab.config.schema import register_schemas

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# conf/ at the top of the repository, shipped in the wheel as this package (pyproject.toml).
CONFIG_PACKAGE = "diffusion_lab.conf"
CONFIG_URL = f"pkg://{CONFIG_PACKAGE}"


def config_path() -> str:
    """Hydra's config path: CONFIG_URL, or a checkout's conf/ where that names other files."""
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.find_spec(CONFIG_PACKAGE)
    origin = spec.origin if spec is not None else None
    # A checkout imported by PYTHONPATH alone has no diffusion_lab.conf, and another worktree's
    # editable install maps it to that worktree's conf/: read the conf/ beside this code.
    beside = origin is not None and Path(origin).resolve() == root / "conf" / "__init__.py"
    if (root / "pyproject.toml").is_file() and not beside:
        return str(root / "conf")
    return CONFIG_URL


CONFIG_PATH = config_path()

# Registered on import, before @hydra.main composes `hydra.run.dir`, `hydra.sweep.subdir`, and
# before any config composed here is resolved.
OmegaConf.register_new_resolver("dl_job_name", job_folder_name, replace=True)
OmegaConf.register_new_resolver("dl_run_dir", resumed_run_dir, replace=True)
OmegaConf.register_new_resolver("dl_name_or", name_or, replace=True)
# The schemas that the primary configs name first in their defaults lists.
register_schemas()


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
