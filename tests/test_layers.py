"""The layer rules of DESIGN.md, checked on the source: imports point down only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "diffusion_lab"


def imported_modules(path: Path) -> set[str]:
    """Top-level names of everything a source file imports (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def is_under(name: str, modules: tuple[str, ...]) -> bool:
    """Whether `name` is one of `modules` or inside one (not merely sharing a prefix)."""
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def files_of(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


# The modules users run with `python -m`; nothing in the package imports them.
ENTRY_POINTS = tuple(
    f"diffusion_lab.{name}"
    for name in (
        "train",
        "generate",
        "classify",
        "evaluate",
        "report",
        "bench",
        "bench_input",
        "export_set",
        "study",
    )
)
# The study runs the other commands' own functions, stage by stage.
COMPOSES_COMMANDS = PACKAGE / "stages"


@pytest.mark.parametrize("module", [m.rsplit(".", 1)[-1] for m in ENTRY_POINTS])
def test_no_module_imports_an_entry_point(module):
    """Entry points import only from the layers below them (and each other not at all)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(COMPOSES_COMMANDS) and module != "study":
            continue
        for name in imported_modules(path):
            assert name != f"diffusion_lab.{module}", f"{path.relative_to(PACKAGE)} imports {name}"


@pytest.mark.parametrize("module", ["plotting.py", "fitting.py"])
def test_plotting_and_fitting_sit_below_the_entry_points(module):
    for name in imported_modules(PACKAGE / module):
        assert not is_under(name, ENTRY_POINTS), f"{module} imports {name}"
    if module == "plotting.py":  # matplotlib figures only: no Lightning, no lit/
        assert not any(
            n.startswith(("diffusion_lab.lit", "pytorch_lightning"))
            for n in imported_modules(PACKAGE / module)
        )


@pytest.mark.parametrize("layer", ["diffusion", "nets"])
def test_pure_torch_layers_import_torch_and_the_standard_library_only(layer):
    allowed_own = {f"diffusion_lab.{layer}", "diffusion_lab.diffusion"}
    for path in files_of(layer):
        for name in imported_modules(path):
            top = name.split(".")[0]
            own = any(name == a or name.startswith(f"{a}.") for a in allowed_own)
            assert top == "torch" or top in sys.stdlib_module_names or own, f"{path.name}: {name}"


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("diffusion", ("diffusion_lab.data", "diffusion_lab.lit", "diffusion_lab.train")),
        ("nets", ("diffusion_lab.data", "diffusion_lab.lit", "diffusion_lab.train")),
        ("data", ("diffusion_lab.lit", "diffusion_lab.train", "hydra")),
        ("lit", (*ENTRY_POINTS, "diffusion_lab.fitting", "diffusion_lab.reporting")),
        ("reporting", (*ENTRY_POINTS, "diffusion_lab.fitting")),
        # Metrics and their cache: torch, the standard library and atomic files, no Lightning.
        ("quality", ("diffusion_lab.data", "diffusion_lab.lit", "pytorch_lightning", "hydra")),
    ],
)
def test_imports_point_down_only(layer, forbidden):
    for path in files_of(layer):
        for name in imported_modules(path):
            assert not is_under(name, forbidden), f"{layer}/{path.name} imports {name}"
