"""The train entry point end to end: composed config, outputs on disk, EMA, checkpoints, resume."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment

from diffusion_lab.data import DigitsDataModule
from diffusion_lab.diffusion import NoiseSchedule, linear_betas
from diffusion_lab.jobs.fitting import build_trainer
from diffusion_lab.jobs.train import train
from diffusion_lab.lit.checkpoint import AtomicCheckpointIO
from diffusion_lab.lit.ddpm import DDPMModule
from diffusion_lab.lit.ema import WarmupEMA, warmup_decay
from diffusion_lab.nets import UNet
from diffusion_lab.runs.trained_run import TrainedRun, load_ddpm
from tests.helpers import png_pixels


def tensorboard_tags(run_dir: Path) -> dict[str, list[str]]:
    """Scalar, image and HParams tags over all event files in a run folder."""
    tags: dict[str, list[str]] = {"scalars": [], "images": [], "hparams": []}
    for events in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
        accumulator.Reload()
        tags["scalars"] += accumulator.Tags()["scalars"]
        tags["images"] += accumulator.Tags()["images"]
        # EventAccumulator does not surface the HParams plugin's summaries; read them raw.
        for event in EventFileLoader(str(events)).Load():
            values = event.summary.value
            tags["hparams"] += [
                v.tag for v in values if v.metadata.plugin_data.plugin_name == "hparams"
            ]
    return tags


def tensorboard_hparam_columns(logdir: Path) -> list[tuple[str, bool]]:
    """TensorBoard's HParams columns for a logdir, in its order: (name, differs between runs)."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb_context = base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer, data_provider=provider
    )
    handler = get_experiment.Handler(
        context.RequestContext(),
        backend_context.Context(tb_context),
        "",
        api_pb2.GetExperimentRequest(),
    )
    return [(info.name, info.differs) for info in handler.run().hparam_infos]


@pytest.mark.parametrize("lr_schedule", ["warmup_cosine", "constant"])
def test_fast_dev_run_through_compose_api(compose_train, lr_schedule):
    cfg = compose_train(f"lr_schedule={lr_schedule}", "trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert metrics["global_step"] == 1
    assert 0 < metrics["train/loss"] < 10


@pytest.mark.slow
def test_short_run_writes_every_output(compose_train):
    cfg = compose_train()
    metrics = train(cfg)
    run = Path(cfg.output_dir)

    assert metrics["global_step"] == 6 and metrics["epochs"] == 2
    # Second epoch only: 3 steps of 16 images, in well under the whole run's wall time.
    assert metrics["train_images_per_s"] > 48 / metrics["wall_time_s"]
    assert json.loads((run / "metrics.json").read_text())["val/loss"] == pytest.approx(
        metrics["val/loss"]
    )
    for name in ("loss_curve.png", "samples_step0000003.png", "samples_final.png"):
        png_pixels(run / name)
    # The last epoch's grid is the final one, not written twice.
    assert not (run / "samples_step0000006.png").exists()
    checkpoints = {p.name for p in (run / "checkpoints").glob("*.ckpt")}
    assert checkpoints == {"last.ckpt", "step0000003.ckpt", "step0000006.ckpt"}
    tags = tensorboard_tags(run)
    assert {"train/loss", "train/loss_epoch", "val/loss", "train/lr"} <= set(tags["scalars"])
    assert any(tag.startswith("val/loss_t") for tag in tags["scalars"])
    assert "val/samples" in tags["images"]
    # TensorBoard's Time Series orders groups, and tags in a group, alphabetically: the
    # dashboard opens on train/loss, and the val group on val/loss (no `epoch` card first).
    cards = sorted({*tags["scalars"], *tags["images"]})
    assert cards[:3] == ["train/loss", "train/loss_epoch", "train/lr"]
    assert next(tag for tag in cards if not tag.startswith("train/")) == "val/loss"
    assert "_hparams_/session_start_info" in tags["hparams"]
    # The HParams table takes its metrics from the curves: no single-point `final/` cards.
    assert not [tag for tag in tags["scalars"] if tag.startswith("final/")]


@pytest.mark.slow
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


@pytest.mark.slow
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


class LiveWeights(pl.Callback):
    """Snapshots the live (non-averaged) weights after every optimizer step."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.snapshots.append(
            {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        )


def fit_tiny_with_ema(
    ema: WarmupEMA, steps: int, validate_every: int | None = None
) -> tuple[DDPMModule, LiveWeights]:
    """Train a tiny DDPM for `steps` optimizer steps, recording the live weights; with
    `validate_every`, validation (which swaps the averaged weights in and out) every so many."""
    torch.manual_seed(0)
    net = UNet(
        in_channels=1, img_size=8, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=()
    )
    schedule = NoiseSchedule(linear_betas(10, 1e-4, 0.02))
    module = DDPMModule(net, schedule, optimizer=functools.partial(torch.optim.AdamW, lr=1e-2))
    data = DigitsDataModule(batch_size=8, img_size=8, channels=1, num_classes=10, val_size=10)
    recorder = LiveWeights()
    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0 if validate_every is None else 1,
        val_check_interval=validate_every,
        num_sanity_val_steps=0,
        callbacks=[ema, recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=data)
    return module, recorder


@pytest.mark.parametrize(("warmup", "validate_every"), [(False, None), (True, None), (True, 2)])
def test_ema_follows_its_recurrence(warmup, validate_every):
    """e_1 = w_1, e_n = d_n e_(n-1) + (1 - d_n) w_n; the module ends with e_N (on_train_end).

    d_n = decay, or min(decay, n / (9 + n)) with warmup (n - 1 updates averaged before step n).
    Validations in between swap the weights twice each and must not disturb the average.
    """
    decay, steps = 0.7, 5
    ema = WarmupEMA(decay=decay, warmup=warmup)
    module, recorder = fit_tiny_with_ema(ema, steps, validate_every)

    expected = recorder.snapshots[0]
    for n, live in enumerate(recorder.snapshots[1:], start=2):
        d = min(decay, n / (9 + n)) if warmup else decay
        expected = {k: d * expected[k] + (1 - d) * live[k] for k in expected}
    assert len(recorder.snapshots) == steps
    for name, value in module.net.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(module.net.conv_in.weight, recorder.snapshots[-1]["conv_in.weight"])


def test_warmup_decay_ramps_to_the_configured_decay():
    assert warmup_decay(0.9999, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.9999, 990) == pytest.approx(0.991)
    assert warmup_decay(0.9999, 10**6) == 0.9999
    with pytest.raises(ValueError, match=r"decay=1\.0"):
        WarmupEMA(decay=1.0)


def test_sample_grid_placed_after_ema_is_refused(compose_train):
    cfg = compose_train("trainer.fast_dev_run=true")
    callbacks = dict(cfg.callbacks)
    cfg.callbacks = {"ema": callbacks.pop("ema"), **callbacks}
    with pytest.raises(ValueError, match="SampleGrid must come before the EMA callback"):
        train(cfg)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def crash_midway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_trainer_from_config_uses_the_atomic_writer(compose_train):
    trainer = build_trainer(compose_train(), run_config={})
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.slow
def test_final_grid_is_sampled_with_ema_weights_before_teardown(compose_train, monkeypatch):
    """Lightning's teardown moves the module to the CPU: a grid sampled after it runs there.

    On a GPU that turned the last grid of `train trainer=gpu` into minutes or hours of CPU work.
    """
    events: list[str] = []
    weights_at_final_grid: list[torch.Tensor] = []
    sample, teardown = TrainedRun.sample, SingleDeviceStrategy.teardown

    def recording_sample(self, *args, **kwargs):
        events.append("sample")
        weights_at_final_grid.append(self.module.net.conv_in.weight.detach().clone())
        return sample(self, *args, **kwargs)

    def recording_teardown(self):
        events.append("teardown")
        teardown(self)

    monkeypatch.setattr(TrainedRun, "sample", recording_sample)
    monkeypatch.setattr(SingleDeviceStrategy, "teardown", recording_teardown)
    cfg = compose_train("epochs=1")
    train(cfg)

    assert events == ["sample", "teardown"]
    png_pixels(Path(cfg.output_dir) / "samples_final.png")
    module, _ = load_ddpm(Path(cfg.output_dir) / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(weights_at_final_grid[0], module.net.conv_in.weight)


@pytest.mark.slow
def test_sample_grids_use_the_dpm_solver_when_configured(compose_train, monkeypatch):
    import diffusion_lab.diffusion as diffusion

    steps_seen: list[int] = []
    real = diffusion.dpmpp_2m_sample

    def spy(*args, **kwargs):
        steps_seen.append(kwargs["steps"])
        return real(*args, **kwargs)

    # Hydra looks the sampler's _target_ up when the callbacks are built.
    monkeypatch.setattr(diffusion, "dpmpp_2m_sample", spy)
    cfg = compose_train("sampler=dpmpp_2m", "sampler.steps=3", "epochs=1")
    train(cfg)
    assert steps_seen == [3]  # the final grid (one epoch: no per-epoch grid before it)
    png_pixels(Path(cfg.output_dir) / "samples_final.png")
