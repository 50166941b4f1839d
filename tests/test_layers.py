"""The package's layers, checked on the source: the top level holds the commands and packages
only, and imports point down only.

From the bottom: the pure layers (diffusion, nets, quality: torch only); utils; data; config;
cli, tracking and figures; lit and runs; scoring, reporting and benchmarks; jobs; stages; and at
the top the commands, which nothing imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "diffusion_lab"

# The modules users run with `python -m diffusion_lab.<command>`.
COMMANDS = ("train", "generate", "classify", "evaluate", "report", "bench", "export_set", "study")
# The diffusion_lab packages each package may import besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    package: frozenset(below.split())
    for package, below in {
        "diffusion": "",
        "nets": "diffusion",
        "quality": "",
        # progress reports through the samplers' Progress callback type.
        "utils": "diffusion",
        "data": "utils",
        "config": "utils data diffusion nets",
        "cli": "utils config",
        "tracking": "utils config",
        "figures": "utils tracking",
        # One layer: runs reads the LightningModules that lit defines; lit's callbacks sample
        # through runs.TrainedRun.
        "lit": "utils data diffusion nets quality tracking figures runs",
        "runs": "utils data diffusion nets lit",
        "scoring": "utils config data quality runs",
        "reporting": "utils config data tracking figures lit runs",
        "benchmarks": "utils config cli data diffusion nets quality lit",
        "jobs": "utils config cli data diffusion nets quality tracking figures lit runs scoring "
        "reporting",
        # The study runs the commands' own functions, stage by stage.
        "stages": "utils config cli data diffusion nets quality tracking figures lit runs scoring "
        "reporting jobs",
    }.items()
}


def imported_modules(path: Path) -> set[str]:
    """Full names of everything a source file imports (absolute imports only); `from a import b`
    counts as `a.b` too, so that importing a module from its package is seen."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def own_packages(path: Path) -> set[str]:
    """The diffusion_lab packages (or top-level modules) a source file imports from."""
    return {
        name.split(".")[1] for name in imported_modules(path) if name.startswith("diffusion_lab.")
    }


def files_of(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_the_top_level_holds_only_the_commands_and_packages():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(COMMANDS)
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(ALLOWED), "a package without layer rules, or rules without a package"
    assert all((PACKAGE / folder / "__init__.py").is_file() for folder in folders)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_is_thin_and_imported_by_nothing(command):
    """A command parses its command line (or lets Hydra) and calls into the packages."""
    tree = ast.parse((PACKAGE / f"{command}.py").read_text())
    defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    assert "main" in defined
    assert all(name == "main" or name.startswith("parse_") for name in defined), defined
    for path in sorted(PACKAGE.rglob("*.py")):
        assert command not in own_packages(path), f"{path.relative_to(PACKAGE)} imports it"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down_only(package):
    allowed = ALLOWED[package] | {package}
    for path in files_of(package):
        above = own_packages(path) - allowed
        assert not above, f"{path.relative_to(PACKAGE)} imports {sorted(above)}"


@pytest.mark.parametrize("package", ["diffusion", "nets", "quality"])
def test_pure_layers_import_torch_and_the_standard_library_only(package):
    for path in files_of(package):
        for name in imported_modules(path):
            top = name.split(".")[0]
            ok = top in ("torch", "diffusion_lab") or top in sys.stdlib_module_names
            assert ok, f"{package}/{path.name} imports {name}"


LIGHTNING = ("pytorch_lightning", "lightning_fabric", "lightning")


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # Datasets and DataModules: no Hydra (the configs that build them live above).
        ("data", ("hydra", "omegaconf")),
        # matplotlib figures only: callbacks and commands log or save them.
        ("figures", (*LIGHTNING, "hydra")),
    ],
)
def test_libraries_a_layer_does_without(package, forbidden):
    for path in files_of(package):
        for name in imported_modules(path):
            assert name.split(".")[0] not in forbidden, f"{package}/{path.name} imports {name}"


def test_no_module_is_over_300_lines():
    """A module a newcomer reads in one sitting: split one that grows past this."""
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 300
    }
    assert long == {}
