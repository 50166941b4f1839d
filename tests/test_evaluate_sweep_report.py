"""`report` on an evaluate sweep over w and sampler steps: the table, the guidance figure's
lines and the best jobs, from job folders laid out as `evaluate --multirun` leaves them (its
damaged ones: rows of tests/test_bad_inputs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diffusion_lab.reporting.evaluate_sweep import (
    FIGURE,
    STEPS_FIGURE,
    EvalJob,
    guidance_figure,
    read_eval_job,
    report_evaluate_sweep,
    steps_figure,
)
from diffusion_lab.reporting.sweeps import job_dirs, job_overrides
from tests.helpers import png_pixels

W_VALUES = [0, 0.5, 1, 1.8, 3, 5]
STEPS = [25, 50]


def fake_fid(w: float, steps: int) -> float:
    """Lowest at w=1.8 and, of 10, 25 and 50, with 50 steps."""
    return 10.0 + (w - 1.8) ** 2 + 250.0 / steps


def fake_fidelity(w: float, steps: int) -> float:
    """Grows with w: highest at w=5 with 50 steps."""
    return 0.5 + 0.05 * w + (0.0 if steps == 25 else 0.01)


def write_eval_job(
    job: Path,
    overrides: list[str],
    w: float,
    steps: int,
    samples: int = 100,
    fidelity: float | None = None,
    finished: bool = True,
    sampler: str = "ddim",
    nfe: int | None = None,
    fid: float | None = None,
) -> Path:
    """One job folder as `evaluate --multirun` writes it (`.hydra/` and metrics.json), or,
    unfinished, as it is while the job runs (`.hydra/` only). nfe: 2 per step, 1 at w = 0
    unless given; FID fake_fid's unless given."""
    (job / ".hydra").mkdir(parents=True)
    hydra = {"hydra": {"job": {"name": "evaluate", "override_dirname": ",".join(overrides)}}}
    OmegaConf.save(OmegaConf.create(hydra), job / ".hydra" / "hydra.yaml")
    OmegaConf.save(
        OmegaConf.create(["ckpt=tiny.ckpt", *overrides]), job / ".hydra" / "overrides.yaml"
    )
    config = {"ckpt": "tiny.ckpt", "w": w, "per_class": samples // 10, "sampler": {"steps": steps}}
    OmegaConf.save(OmegaConf.create(config), job / ".hydra" / "config.yaml")
    if not finished:
        return job
    metrics = {
        "protocol": {
            "features": "standin.pt (sha256 d9b2e985bd93), 64x64, 16-d",
            "num_generated": samples,
            "num_reference": 1500,
            "per_class": samples // 10,
            "reference": "DigitsDataModule train split",
            "sampler": sampler,
            "source": "ckpt tiny.ckpt",
            "steps": steps,
            "nfe": nfe if nfe is not None else steps * (1 if w == 0 else 2),
            "w": w,
        },
        "quality/fid": fid if fid is not None else fake_fid(w, steps),
        "quality/fid_class/0": 30.0,
        "quality/kid": 0.01 * w,
        "quality/kid_std": 0.001,
        "quality/memorised_share": 0.0,
        "quality/precision": 0.6 - 0.01 * w,
        "quality/recall": 0.5 - 0.05 * w,
    }
    if fidelity is not None:
        metrics |= {"quality/label_fidelity": fidelity, "quality/label_fidelity_ceiling": 0.767}
    (job / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return job


def read_jobs(sweep: Path) -> list[EvalJob]:
    """The finished jobs of `sweep` in job order, as the report reads them."""
    folders = [f for f in job_dirs(sweep) if (f / "metrics.json").is_file()]
    return [read_eval_job(f, job_overrides(f), f.name) for f in folders]


@pytest.fixture
def sweep(tmp_path) -> Path:
    """w = 0, 0.5, 1, 1.8, 3, 5 times sampler.steps = 25, 50, with label fidelity."""
    folder = tmp_path / "2026-11-26" / "12-00-00"
    combos = [(steps, w) for steps in STEPS for w in W_VALUES]
    for num, (steps, w) in enumerate(combos):
        overrides = ["sampler=ddim", f"sampler.steps={steps}", f"w={w}"]
        name = f"{num}_{','.join(overrides)}"
        write_eval_job(folder / name, overrides, w, steps, fidelity=fake_fidelity(w, steps))
    return folder


@pytest.mark.slow
def test_report_writes_a_row_per_job_the_best_jobs_and_the_figure(run_cli, sweep):
    result = run_cli("report", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.strip().splitlines()
    assert out[-1] == f"report: 12 jobs of an evaluate sweep; outputs in {sweep}"
    text = (sweep / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows == [line for line in out if line.startswith("|")]  # the table is printed too
    assert rows[0] == (
        "| job | overrides | sampler | w | steps | nfe | samples | FID | KID | precision | recall "
        "| label fidelity (%) |"
    )
    assert len(rows) == 2 + 12
    # Job 9: steps 50, w=1.8, FID 15, KID 0.018 ± 0.001, label fidelity 0.5 + 0.09 + 0.01.
    assert rows[11] == (
        "| 9 | `sampler.steps=50 w=1.8` | ddim | 1.8 | 50 | 100 | 100 | 15.00 | 0.0180 ± 0.0010 "
        "| 0.582 | 0.410 | 60.00 |"
    )
    assert (
        "Lowest FID at 100 generated images: job 9 (`sampler.steps=50 w=1.8`, ddim, w=1.8, "
        "50 steps): FID 15.00." in text
    )
    assert (
        "Highest label fidelity: job 11 (`sampler.steps=50 w=5`, ddim, w=5, 50 steps): "
        "76.00 % (real test images: 76.70 %)." in text
    )
    assert f"![report_guidance]({FIGURE})" in text
    png_pixels(sweep / FIGURE)
    # Two step counts at the same w: the cost figure too.
    assert f"![report_steps]({STEPS_FIGURE})" in text
    png_pixels(sweep / STEPS_FIGURE)


def test_the_figure_has_a_line_per_step_count_against_w(sweep):
    figure = guidance_figure(read_jobs(sweep), "title")
    fid, precision_recall, fidelity = figure.axes
    assert [ax.get_ylabel() for ax in figure.axes] == [
        "FID",
        "precision / recall",
        "label fidelity (%)",
    ]
    assert all(ax.get_xlabel() == "w" for ax in figure.axes)
    assert [line.get_label() for line in fid.lines] == ["sampler.steps=25", "sampler.steps=50"]
    for line, steps in zip(fid.lines, STEPS, strict=True):
        assert list(line.get_xdata()) == W_VALUES
        assert list(line.get_ydata()) == [fake_fid(w, steps) for w in W_VALUES]
    assert len(precision_recall.lines) == 4
    assert [line.get_linestyle() for line in precision_recall.lines] == ["-", "-", "--", "--"]
    assert list(fidelity.lines[1].get_ydata()) == pytest.approx(
        [100 * fake_fidelity(w, 50) for w in W_VALUES]
    )
    assert "100 generated images per job: FID compares only at the same sample count" in (
        figure._suptitle.get_text()
    )


@pytest.mark.slow
def test_steps_alone_are_the_x_axis_and_each_sample_count_has_its_best(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    for num, (steps, samples) in enumerate([(10, 100), (25, 100), (50, 100), (50, 1000)]):
        overrides = [f"per_class={samples // 10}", f"sampler.steps={steps}"]
        write_eval_job(sweep / f"{num}_{','.join(overrides)}", overrides, 1.8, steps, samples)
    write_eval_job(sweep / "4_unfinished", ["w=3"], 3, 50, finished=False)
    result = run_cli("report", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping" in result.stderr and "4_unfinished" in result.stderr
    text = (sweep / "report.md").read_text()
    assert "label fidelity" not in text.split("\n\n", 2)[2]  # no column without a classifier
    assert "Lowest FID at 100 generated images: job 2 (`per_class=10 sampler.steps=50`" in text
    assert "Lowest FID at 1,000 generated images: job 3 (`per_class=100 sampler.steps=50`" in text
    figure = guidance_figure(read_jobs(sweep), "title")
    [fid, _] = figure.axes
    assert fid.get_xlabel() == "steps"
    assert {line.get_label(): list(line.get_xdata()) for line in fid.lines} == {
        "per_class=10": [10, 25, 50],
        "per_class=100": [50],
    }


# A sweep over samplers, steps and the guidance interval at w = 1.8 (the ancestral job run
# into the same folder): (overrides, sampler, steps, nfe, FID, label fidelity).
DPM = "sampler=dpmpp_2m"
NO_BAND = "sampler.guidance_interval=null"
BAND = "sampler.guidance_interval=[100,400]"
COST_JOBS = [
    (["sampler=ancestral"], "ancestral", 500, 1000, 20.0, 0.70),
    (["sampler=ddim", "sampler.steps=10"], "ddim", 10, 20, 40.0, 0.50),
    (["sampler=ddim", "sampler.steps=50"], "ddim", 50, 100, 22.0, 0.66),
    ([DPM, "sampler.steps=20", NO_BAND], "dpmpp_2m", 20, 40, 21.0, 0.68),
    ([DPM, "sampler.steps=10", NO_BAND], "dpmpp_2m", 10, 20, 25.0, 0.62),
    ([DPM, "sampler.steps=10", BAND], "dpmpp_2m", 10, 16, 24.0, 0.61),
    ([DPM, "sampler.steps=20", BAND], "dpmpp_2m", 20, 33, 20.5, 0.69),
]


@pytest.fixture
def cost_sweep(tmp_path) -> Path:
    folder = tmp_path / "2026-11-27" / "09-00-00"
    for num, (overrides, sampler, steps, nfe, fid, fidelity) in enumerate(COST_JOBS):
        job = folder / f"{num}_{','.join(overrides)}"
        write_eval_job(job, overrides, 1.8, steps, 1000, fidelity, True, sampler, nfe, fid)
    return folder


def test_a_sweep_over_samplers_and_steps_gets_quality_against_network_evaluations(cost_sweep):
    figure = steps_figure(read_jobs(cost_sweep), "title")
    fid, fidelity = figure.axes
    assert [ax.get_ylabel() for ax in figure.axes] == ["FID", "label fidelity (%)"]
    assert all(ax.get_xlabel() == "network evaluations per image" for ax in figure.axes)
    assert all(ax.get_xscale() == "log" for ax in figure.axes)
    lines = {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in fid.lines
    }
    unset = "sampler.guidance_interval=(unset)"
    assert lines == {
        f"sampler=ancestral {unset}": ([1000], [20.0]),
        f"sampler=ddim {unset}": ([20, 100], [40.0, 22.0]),
        "sampler=dpmpp_2m sampler.guidance_interval=null": ([20, 40], [25.0, 21.0]),
        "sampler=dpmpp_2m sampler.guidance_interval=[100,400]": ([16, 33], [24.0, 20.5]),
    }
    assert list(fidelity.lines[3].get_ydata()) == pytest.approx([61.0, 69.0])
    ticks = [label.get_text() for label in fid.get_xticklabels()]
    assert ticks == ["16", "20", "33", "40", "100", "1000"]


@pytest.mark.slow
def test_the_report_of_such_a_sweep_has_an_nfe_column_and_both_figures(run_cli, cost_sweep):
    assert run_cli("report", str(cost_sweep)).returncode == 0
    text = (cost_sweep / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[2:6] for row in rows] == [
        [sampler, "1.8", str(steps), str(nfe)] for _, sampler, steps, nfe, _, _ in COST_JOBS
    ]
    assert f"![report_steps]({STEPS_FIGURE})" in text
    png_pixels(cost_sweep / STEPS_FIGURE)
    assert "Lowest FID at 1,000 generated images: job 0 (`sampler=ancestral`" in text


def test_a_sweep_over_w_alone_gets_no_cost_figure(tmp_path):
    """w = 0 halves the evaluations per step, but w has its own figure."""
    sweep = tmp_path / "sweep"
    for num, w in enumerate([0, 1.8]):
        write_eval_job(sweep / f"{num}_w={w}", [f"w={w}"], w, 50)
    written = [path.name for path in report_evaluate_sweep(sweep, job_dirs(sweep))]
    assert written == ["report.md", FIGURE]


def test_jobs_evaluated_before_nfe_was_recorded_are_left_out_of_the_cost_figure(cost_sweep):
    metrics_file = next(cost_sweep.glob("1_*")) / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    del metrics["protocol"]["nfe"]
    metrics_file.write_text(json.dumps(metrics))
    jobs = read_jobs(cost_sweep)
    assert jobs[1].nfe == "unknown"
    [ddim] = [
        line for line in steps_figure(jobs, "title").axes[0].lines if "ddim" in line.get_label()
    ]
    assert list(ddim.get_xdata()) == [100]
