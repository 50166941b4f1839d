"""FID during training: off by default, logged with its sample count when on."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffusion_lab.jobs.train import train
from diffusion_lab.utils.errors import ConfigError
from tests.feature_standin import save_stand_in


def scalar_tags(run_dir) -> dict[str, int]:
    """Scalar tag -> number of points over the run's event files."""
    counts: dict[str, int] = {}
    for events in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            counts[tag] = counts.get(tag, 0) + len(accumulator.Scalars(tag))
    return counts


def fid_overrides(weights, *extra: str) -> list[str]:
    base = ["callbacks.fid.every_n_epochs=1", f"callbacks.fid.weights={weights}"]
    sizes = ["callbacks.fid.per_class=2", "callbacks.fid.reference_size=40"]
    return [*base, *sizes, "callbacks.fid.input_size=32", "callbacks.fid.dim=16", *extra]


@pytest.mark.slow
def test_training_fid_is_logged_every_epoch_with_its_sample_count(compose_train, tmp_path):
    weights = save_stand_in(tmp_path / "features.pt")
    train(compose_train(*fid_overrides(weights, "callbacks.fid.allow_grey=true")))
    tags = scalar_tags(tmp_path / "run")
    assert tags["quality/fid_20samples_biased"] == 2  # 2 epochs, 10 classes x 2 samples


def test_training_fid_is_off_by_default_and_refuses_grey_data(compose_train, tmp_path):
    assert compose_train().callbacks.fid.every_n_epochs == 0
    weights = save_stand_in(tmp_path / "features.pt")
    with pytest.raises(ConfigError, match=r"callbacks\.fid\.allow_grey=false"):
        train(compose_train(*fid_overrides(weights)))
