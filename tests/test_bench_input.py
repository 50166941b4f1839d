"""`bench input`, the input benchmark, runs end to end on a few batches and writes its table as
JSON."""

from __future__ import annotations

import json

import pytest

from diffusion_lab.benchmarks.input import BASELINE


@pytest.mark.slow
def test_bench_input_writes_rows_with_ratios_to_the_baseline(run_cli, tmp_path):
    out = tmp_path / "bench.json"
    sizes = ["--images", "256", "--epochs", "2", "--baseline-batches", "3", "--step-batches", "2"]
    result = run_cli("bench", "input", *sizes, "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    cases = [row["case"] for row in report["rows"]]
    assert cases[0] == BASELINE and cases[1] == "in-memory tensors" and "MLP step" in cases[2]
    assert [row["batches"] for row in report["rows"]] == [3, 16, 2]
    assert report["rows"][0]["ratio"] == 1.0 and 0 < report["input_share"] < 1
    assert "images/s" in result.stdout
