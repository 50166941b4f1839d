"""experiments/study/gpu_window.py: the parts, their checks, and the whole window at toy scale."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "experiments" / "study" / "gpu_window.py"


def window():
    """The script as a module (it lives outside the package)."""
    spec = importlib.util.spec_from_file_location("gpu_window", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parts_reassemble_to_the_same_bytes_and_a_missing_part_is_named(tmp_path):
    gw = window()
    files = {}
    for name, size in (("data/a.bin", 2500), ("data/b.bin", 900), ("w/empty.bin", 0)):
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes((i * 7) % 251 for i in range(size)))
        files[name] = path
    wheel = tmp_path / "src" / "tool-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    parts = gw.pack(files, [wheel], tmp_path / "packed", part_bytes=1000)
    assert len(parts) == 4  # 5 bytes of wheel + 3400 bytes of data in parts of 1000
    assert all(
        sum(p.stat().st_size for p in part.iterdir() if p.name != gw.MANIFEST) <= 1000
        for part in parts
    )
    store = tmp_path / "store"
    for part in parts[:-1]:
        gw.receive(part, store)
    with pytest.raises(SystemExit, match=f"missing part{len(parts)}: carry each"):
        gw.assemble(store)
    gw.receive(parts[-1], store)
    gw.assemble(store)
    for name, source in files.items():
        assert (store / name).read_bytes() == source.read_bytes()
    assert (store / "wheels" / wheel.name).read_bytes() == b"wheel"


def test_a_damaged_chunk_is_refused(tmp_path):
    gw = window()
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 3000)
    (part,) = gw.pack({"a.bin": source}, [], tmp_path / "packed", part_bytes=10_000)
    chunk = next(p for p in part.iterdir() if p.name != gw.MANIFEST)
    chunk.write_bytes(b"y" * 3000)
    with pytest.raises(SystemExit, match="missing or damaged"):
        gw.receive(part, tmp_path / "store")


@pytest.mark.slow
@pytest.mark.real_data
def test_the_whole_window_at_toy_scale(cifar10_root):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "smoke"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "files returned" in result.stdout
