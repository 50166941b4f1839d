"""The train entry point end to end: composed config, outputs on disk, EMA, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffusion_lab.lit.checkpoint import load_ddpm
from diffusion_lab.train import train


def tensorboard_tags(run_dir: Path) -> dict[str, list[str]]:
    """Scalar and image tags over all event files in a run folder."""
    tags: dict[str, list[str]] = {"scalars": [], "images": []}
    for events in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        for kind in tags:
            tags[kind] += accumulator.Tags()[kind]
    return tags


@pytest.mark.parametrize("lr_schedule", ["warmup_cosine", "constant"])
def test_fast_dev_run_through_compose_api(compose_train, lr_schedule):
    cfg = compose_train(f"lr_schedule={lr_schedule}", "trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert metrics["global_step"] == 1
    assert 0 < metrics["train/loss"] < 10


def test_short_run_writes_every_output(compose_train):
    cfg = compose_train()
    metrics = train(cfg)
    run = Path(cfg.output_dir)

    assert metrics["global_step"] == 6 and metrics["epochs"] == 2
    assert json.loads((run / "metrics.json").read_text())["val/loss"] == pytest.approx(
        metrics["val/loss"]
    )
    for name in ("loss_curve.png", "samples_epoch_0001.png", "samples_final.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # The last epoch's grid is the final one, not written twice.
    assert not (run / "samples_epoch_0002.png").exists()
    assert {p.name for p in (run / "checkpoints").glob("*.ckpt")} >= {"last.ckpt", "epoch0001.ckpt"}
    tags = tensorboard_tags(run)
    assert {"train/loss", "train/loss_epoch", "val/loss", "lr-AdamW"} <= set(tags["scalars"])
    assert any(tag.startswith("val/loss_t") for tag in tags["scalars"])
    assert "samples/per_class" in tags["images"]


def test_checkpoint_holds_ema_weights_and_rebuilds_alone(compose_train):
    decay = 0.5
    cfg = compose_train(f"callbacks.ema.decay={decay}", "epochs=1")
    train(cfg)
    checkpoint = torch.load(Path(cfg.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)

    module, config = load_ddpm(Path(cfg.output_dir) / "checkpoints" / "last.ckpt")
    assert config["model"]["ch"] == 8 and config["T"] == 20
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][name])
    # The live weights are kept apart from the averaged ones, which differ after 3 updates.
    live = checkpoint["current_model_state"]
    assert any(not torch.equal(live[k], v) for k, v in checkpoint["state_dict"].items())


def test_resume_continues_from_last_checkpoint(compose_train, tmp_path):
    first = compose_train("epochs=1")
    train(first)
    last = Path(first.output_dir) / "checkpoints" / "last.ckpt"
    resumed = compose_train("epochs=2", f"ckpt_path={last}", f"output_dir={tmp_path / 'resumed'}")
    metrics = train(resumed)
    assert metrics["global_step"] == 6
    history = torch.load(Path(resumed.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    loss_curve = next(v for k, v in history["callbacks"].items() if k.startswith("LossCurve"))
    assert loss_curve["train_steps"] == [1, 2, 3, 4, 5, 6]
