"""What a researcher reads in TensorBoard and the PNGs: dense curves in one event file per run,
labelled figures at the scalars' steps, epoch-aligned classifier curves, progress and summaries."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from matplotlib.container import BarContainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import diffusion_lab.lit.callbacks as callbacks
import diffusion_lab.utils.progress as progress
from diffusion_lab.diffusion import NoiseSchedule, linear_betas
from diffusion_lab.figures.bars import per_class_accuracy_figure
from diffusion_lab.figures.curves import schedule_figure
from diffusion_lab.figures.fonts import wrap_overrides
from diffusion_lab.figures.grids import class_grid, class_grid_figure
from diffusion_lab.jobs.classify import classify
from diffusion_lab.jobs.train import train
from diffusion_lab.lit.progress_bar import remaining_s
from tests.test_classify import compose_classify


def read_events(run_dir: Path) -> EventAccumulator:
    """The run's only event file, fully loaded (fails when there is not exactly one)."""
    files = list(run_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, [f.name for f in files]
    events = EventAccumulator(str(files[0]), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def steps_of(events: EventAccumulator, tag: str) -> list[int]:
    kind = "images" if tag in events.Tags()["images"] else "scalars"
    return [e.step for e in (events.Images(tag) if kind == "images" else events.Scalars(tag))]


@pytest.mark.slow
def test_small_run_has_every_step_and_the_labelled_grid_in_one_event_file(
    compose_train, monkeypatch, capsys
):
    titles: list[str] = []

    def recording_figure(grid, names, title=""):
        titles.append(title)
        return class_grid_figure(grid, names, title)

    monkeypatch.setattr(callbacks, "class_grid_figure", recording_figure)
    monkeypatch.setattr(callbacks, "job_overrides", lambda: "beta_T=0.01")
    cfg = compose_train()  # 2 epochs of 3 steps, a grid after each
    metrics = train(cfg)
    events = read_events(Path(cfg.output_dir))

    assert steps_of(events, "train/loss") == list(range(6))
    assert steps_of(events, "train/lr") == list(range(6))
    logged = [e.value for e in events.Scalars("train/loss")]
    assert logged[-1] == pytest.approx(metrics["train/loss"], rel=1e-6)
    # The grids sit at the step of the validation scalars of the same epoch.
    assert steps_of(events, "val/samples") == steps_of(events, "val/loss") == [2, 5]
    # TensorBoard holds the labelled figure (a row label per class), not the 8x8 pixel grid.
    grid = class_grid(torch.zeros(20, 1, 8, 8, dtype=torch.uint8), per_class=2)
    figure = class_grid_figure(grid, [str(k) for k in range(10)], "a\nb")
    width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
    image = events.Images("val/samples")[-1]
    assert (image.width, image.height) == (width, height)
    assert titles == [
        "epoch 1 (3 optimizer steps), ancestral sampler, 20 steps, w=1.8, EMA weights\nbeta_T=0.01",
        "epoch 2 (6 optimizer steps), ancestral sampler, 20 steps, w=1.8, EMA weights\nbeta_T=0.01",
    ]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"train: val/loss {metrics['val/loss']:.4g} after 2 epochs (6 steps, ")
    assert last.endswith(f"; outputs in {cfg.output_dir}")


@pytest.mark.slow
def test_classifier_logs_every_step_and_its_curves_by_epoch_in_one_event_file(
    tmp_path, capsys, recwarn
):
    run = tmp_path / "run"
    metrics = classify(compose_classify(run, "epochs=2"))
    events = read_events(run)

    # The default logging interval is not above the 21 batches of an epoch.
    assert not [w for w in recwarn if "smaller than the logging interval" in str(w.message)]

    steps = metrics["global_step"]  # 2 epochs of 21 batches of 64 digits
    assert steps == 42
    assert steps_of(events, "train/loss") == list(range(steps))
    assert steps_of(events, "train/lr") == list(range(steps))
    for name in ("acc", "loss"):
        assert steps_of(events, f"val_by_epoch/{name}") == [1, 2]
        by_epoch = [e.value for e in events.Scalars(f"val_by_epoch/{name}")]
        assert by_epoch == [e.value for e in events.Scalars(f"val/{name}")]
    assert steps_of(events, "test/confusion_matrix") == steps_of(events, "test/acc")
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"classify: test/acc {100 * metrics['test/acc']:.2f} % (mode real, seed 0); "
        f"outputs in {run}"
    )


def test_progress_off_a_terminal_is_logged_in_images_with_an_eta(caplog, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="diffusion_lab.utils.progress")
    with progress.progress_bar(40, "generating") as bar:
        hook = progress.images_per_step(bar, 20)
        for _ in range(2):  # two sampler calls of 20 images, 4 steps each
            assert list(hook(range(3, -1, -1))) == [3, 2, 1, 0]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1].startswith("generating: 40/40 img (100 %), ")
    assert "generating: 5/40 img (12 %)" in lines[1] and "ETA" in lines[1]


def test_run_eta_extrapolates_the_time_per_step():
    assert remaining_s(elapsed_s=10.0, steps_done=5, steps_left=15) == pytest.approx(30.0)
    assert remaining_s(elapsed_s=3.0, steps_done=0, steps_left=15) is None


def test_schedule_plot_counts_t_from_zero():
    schedule = NoiseSchedule(linear_betas(10, 1e-4, 0.02))
    figure = schedule_figure({"run": (schedule.betas, schedule.alpha_bars)})
    for ax in figure.axes:
        assert list(ax.lines[0].get_xdata()) == list(range(10))
        assert ax.get_xlabel().startswith("t (0-based")


def test_per_class_accuracy_plot_draws_a_bar_per_series_and_class_in_percent():
    stats = {"real (n=2)": [(0.5, 0.1), (0.7, 0.05)], "augmented (n=1)": [(0.6, None), (0.8, None)]}
    figure = per_class_accuracy_figure(stats, ["a", "b"])
    [ax] = figure.axes
    real, augmented = [c for c in ax.containers if isinstance(c, BarContainer)]
    # Side by side around each class's tick, 0.4 wide, at 100 * the mean.
    for bars, offset, heights in ((real, -0.2, [50, 70]), (augmented, 0.2, [60, 80])):
        assert [bar.get_height() for bar in bars] == pytest.approx(heights)
        centres = [bar.get_x() + bar.get_width() / 2 for bar in bars]
        assert centres == pytest.approx([offset, 1 + offset])
    # ± one std in points where the series has a spread; none for a single run.
    [whiskers] = real.errorbar.lines[2]
    segments = [segment[:, 1].tolist() for segment in whiskers.get_segments()]
    assert segments == [pytest.approx([40, 60]), pytest.approx([65, 75])]
    assert augmented.errorbar is None
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(stats)
    assert ax.get_ylim() == (0, 100) and ax.get_title() == "Test accuracy per class"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("class", "test accuracy (%)")


def test_long_overrides_wrap_into_a_few_title_lines():
    overrides = ",".join(f"callbacks.key_{i}=value_{i}" for i in range(20))
    lines = wrap_overrides(overrides, width=80, max_lines=3).splitlines()
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("callbacks.key_0=value_0, callbacks.key_1=value_1, ")
    assert lines[-1].endswith(" ...")
    assert wrap_overrides("mode real, seed 0,beta_T=0.01") == "mode real, seed 0, beta_T=0.01"
