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


def files_of(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


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
        ("lit", ("diffusion_lab.train", "diffusion_lab.bench")),
    ],
)
def test_imports_point_down_only(layer, forbidden):
    for path in files_of(layer):
        for name in imported_modules(path):
            assert not name.startswith(forbidden), f"{layer}/{path.name} imports {name}"
