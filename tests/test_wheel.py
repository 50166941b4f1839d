"""The wheel: built from the repository and installed outside it, it finds its own configs."""

from __future__ import annotations

import itertools
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import REPO_ROOT, run_process

# What the build reads; copied so that setuptools' build/ and egg-info stay out of the repository.
BUILD_INPUTS = ("pyproject.toml", "README.md", "conf", "diffusion_lab", "hydra_plugins")

# One process runs the installed commands one after another (each process would import torch
# and Lightning anew): it prints where diffusion_lab.conf was imported from (the test must see
# that the wheel's copy, not the repository's editable install, was used), then runs
# `python -m MODULE ARGS` for each JSON [env, module, *args] in argv, its output in <i>.txt.
RUN_MODULES = """
import json, logging, os, runpy, sys
from hydra.core.global_hydra import GlobalHydra
import diffusion_lab.conf
print(diffusion_lab.conf.__file__, flush=True)
for i, (env, *argv) in enumerate(json.loads(sys.argv[1])):
    os.environ.update(env)
    with open(f"{i}.txt", "w") as out:
        os.dup2(out.fileno(), 1)
    sys.argv = argv
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        assert not exit_.code, (argv, exit_.code)
    sys.stdout.flush()
    for key in env:
        del os.environ[key]
    GlobalHydra.instance().clear()
    logging.root.handlers.clear()  # --info leaves Hydra's debug logging on
    logging.root.setLevel(logging.WARNING)
"""

# Hydra's record of where the primary config came from: the package, not a folder.
MAIN_SOURCE = {"path": "diffusion_lab.conf", "schema": "pkg", "provider": "main"}

ENTRY_POINTS = [
    (
        "diffusion_lab.train",
        ["experiment=quickstart"],
        {"img_size": 16, "model.ch": 32, "data._target_": "diffusion_lab.data.DigitsDataModule"},
    ),
    (
        "diffusion_lab.generate",
        ["ckpt=x"],
        {"ckpt": "x", "per_class": 5000, "sampler.steps": 20, "sampler.spacing": "linspace"},
    ),
    (
        "diffusion_lab.classify",
        [],
        {"mode": "auto", "module.net._target_": "diffusion_lab.nets.MLP"},
    ),
]

# Tab completion lists a group's options: the group folders are readable in the wheel.
COMPLETION = [
    {"COMP_LINE": "python train.py experiment=qu"},
    "diffusion_lab.train",
    "-sc",
    "query=bash",
]
PLUGINS = [{}, "diffusion_lab.train", "--info", "plugins"]


def pip(*args: str | Path) -> None:
    """Run the test's own pip, failing the test with its output."""
    result = run_process("-m", "pip", "--disable-pip-version-check", *map(str, args), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def run_installed(site: Path, cwd: Path, runs: list[list]) -> list[str]:
    """Run each [env, module, *args] of `runs` with the wheel installed in `site` (alone on the
    path: not this tree), from `cwd`, in one process; each one's stdout."""
    result = run_process(
        "-c", RUN_MODULES, json.dumps(runs), cwd=cwd, env={"PYTHONPATH": str(site)}, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()) == site / "diffusion_lab" / "conf" / "__init__.py"
    return [(cwd / f"{i}.txt").read_text() for i in range(len(runs))]


def wheel_name(source: Path) -> str:
    """Where a repository file lies in the wheel: conf/ becomes diffusion_lab/conf/."""
    relative = source.relative_to(REPO_ROOT).as_posix()
    return f"diffusion_lab/{relative}" if relative.startswith("conf/") else relative


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the repository's build inputs."""
    tmp = tmp_path_factory.mktemp("wheel")
    for name in BUILD_INPUTS:
        source, target = REPO_ROOT / name, tmp / "src" / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # No build isolation: the venv's setuptools (dev extra) builds it offline.
    pip("wheel", tmp / "src", "--no-deps", "--no-build-isolation", "-w", tmp / "dist")
    return next((tmp / "dist").glob("diffusion_lab-*.whl"))


@pytest.fixture(scope="session")
def site(wheel: Path) -> Path:
    """A folder holding the installed wheel alone (its dependencies come from the venv)."""
    target = wheel.parent.parent / "site"
    pip("install", "--no-deps", "--target", target, wheel)
    return target


@pytest.mark.slow
def test_wheel_holds_every_module_and_config(wheel):
    tops = ("diffusion_lab", "conf", "hydra_plugins")
    sources = [p for top in tops for p in REPO_ROOT.glob(f"{top}/**/*")]
    expected = {wheel_name(p) for p in sources if p.suffix in {".py", ".yaml"}}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert expected - names == set()
    # hydra_plugins is a namespace shared with Hydra's other plugins: no __init__.py of ours.
    assert "hydra_plugins/__init__.py" not in names


@pytest.mark.slow
def test_installed_commands_find_their_configs_plugins_and_group_options(site, tmp_path):
    # One test, so that the wheel is installed and run once (on one pytest worker).
    runs = [[{}, module, "--cfg", "all", *overrides] for module, overrides, _ in ENTRY_POINTS]
    *configs, plugins, completion = run_installed(site, tmp_path, [*runs, PLUGINS, COMPLETION])
    for (module, _, expected), printed in zip(ENTRY_POINTS, configs, strict=True):
        cfg = OmegaConf.create(printed)
        assert {key: OmegaConf.select(cfg, key) for key in expected} == expected, module
        main = [s for s in cfg.hydra.runtime.config_sources if s.provider == "main"]
        assert OmegaConf.to_container(main[0]) == MAIN_SOURCE, module
    # Hydra lists the plugins it found by class name, sweepers under `Sweeper:`.
    lines = plugins.split("\tSweeper:\n", 1)[1].splitlines()[1:]  # below its ------ line
    sweepers = [line.strip() for line in itertools.takewhile(lambda v: v[:2] == "\t\t", lines)]
    assert "ResumableOptunaSweeper" in sweepers
    assert completion.split() == ["experiment=quickstart"]
