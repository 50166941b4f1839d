"""The generate entry point: complete sets, resume after a kill, process-count independence,
a second writer refused, and the checks of its job (bad command lines: tests/test_bad_inputs.py)."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.datasets import ImageFolder

import diffusion_lab.jobs.generate_shards as generate_shards
from diffusion_lab import diffusion
from diffusion_lab.config.source import compose_config
from diffusion_lab.data.generated import MANIFEST_NAME, read_generated_set
from diffusion_lab.jobs.generate import generate
from diffusion_lab.runs.checkpoints import RUN_CONFIG_KEY
from diffusion_lab.runs.trained_run import NonFiniteSamples
from diffusion_lab.utils.errors import DataError, UserFacingError
from diffusion_lab.utils.files import sha256_file
from tests.conftest import TINY_TRAIN_OVERRIDES
from tests.helpers import png_pixels, run_process, start_process

# 10 classes x 3 = 30 images in 8 shards (the last holds 2), DDIM with 5 of the T=20 steps.
SIZES = ["per_class=3", "shard_size=4"]
DDIM5 = ["sampler=ddim", "sampler.steps=5"]
SMALL = [*SIZES, *DDIM5]
Usage = namedtuple("Usage", "free")


def save_tiny_checkpoint(
    path: Path, seed: int = 0, net_changes: dict | None = None, drop: str | None = None
) -> Path:
    """A checkpoint as training writes it for load_ddpm: tiny UNet weights + the run config,
    whose network settings are then changed by `net_changes` and section `drop` removed."""
    cfg = compose_config("train", [*TINY_TRAIN_OVERRIDES, f"output_dir={path.parent}"])
    run_config = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(seed)
    module = instantiate(cfg.module)
    run_config["module"]["net"].update(net_changes or {})
    run_config.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), RUN_CONFIG_KEY: run_config}, path)
    return path


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def compose_generate(ckpt: Path, out: Path, *overrides: str, sampler: list[str] = DDIM5):
    """The real `generate` config for the tiny checkpoint, writing the set to `out`."""
    paths = [f"ckpt={ckpt}", f"out={out}", f"output_dir={out.parent / 'run'}"]
    return compose_config("generate", [*paths, *SIZES, *sampler, *overrides])


def test_generate_writes_a_complete_verified_set(ckpt, tmp_path):
    metrics = generate(compose_generate(ckpt, tmp_path / "set"))
    gen = read_generated_set(tmp_path / "set")
    assert gen.images.shape == (30, 1, 8, 8) and gen.images.dtype == torch.uint8
    assert torch.equal(gen.labels, torch.arange(10).repeat_interleave(3))
    manifest = gen.manifest
    assert manifest["checkpoint_sha256"] == sha256_file(ckpt)
    assert manifest["sampler"] == {
        "name": "ddim",
        "steps": 5,
        "eta": 0.0,
        "clip_x0": True,
        "spacing": "uniform",
        "guidance_interval": None,
        "nfe": 10,  # 5 guided steps, 2 network evaluations each
    }
    assert (manifest["w"], manifest["seed"], manifest["precision"]) == (1.8, 0, "32-true")
    assert manifest["class_names"] == [str(k) for k in range(10)]
    assert len(manifest["shards"]) == 8
    png_pixels(tmp_path / "set" / "contact_sheet.png")
    assert not list((tmp_path / "set").glob(".*"))
    assert metrics["images_made"] == 30
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["num_images"] == 30 and saved["images_per_s"] > 0
    # 8 shards: the rate after the first leaves compilation and autotuning out.
    assert saved["steady_images_per_s"] > 0


def test_ancestral_sampler_records_all_T_steps(ckpt, tmp_path):
    generate(
        compose_generate(
            ckpt, tmp_path / "set", "contact_sheet=false", sampler=["sampler=ancestral"]
        )
    )
    manifest = read_generated_set(tmp_path / "set").manifest
    assert manifest["sampler"]["name"] == "ancestral" and manifest["sampler"]["steps"] == 20
    assert not (tmp_path / "set" / "contact_sheet.png").exists()


def test_dpm_solver_sets_record_the_guidance_interval_and_network_evaluations(ckpt, tmp_path):
    dpm = ["sampler=dpmpp_2m", "sampler.steps=4", "sampler.guidance_interval=[5,15]"]
    generate(compose_generate(ckpt, tmp_path / "set", "contact_sheet=false", sampler=dpm))
    gen = read_generated_set(tmp_path / "set")
    assert gen.images.shape == (30, 1, 8, 8) and gen.images.dtype == torch.uint8
    # linspace visits 19, 14, 10 and 5; the last three lie in [5, 15] and are guided.
    assert gen.manifest["sampler"] == {
        "name": "dpmpp_2m",
        "steps": 4,
        "spacing": "linspace",
        "clip_x0": True,
        "guidance_interval": [5, 15],
        "nfe": 1 + 3 * 2,
    }


class Killed(Exception):
    """Stands for the process being killed."""


def test_killed_run_resumes_to_exactly_the_uninterrupted_set(ckpt, tmp_path, monkeypatch):
    generate(compose_generate(ckpt, tmp_path / "reference"))
    reference = read_generated_set(tmp_path / "reference")

    real_write_manifest = generate_shards.write_manifest
    calls = []

    def write_manifest_then_die(root, manifest):
        calls.append(len(manifest["shards"]))
        if len(calls) == 2:  # shard 1 is on disk, not yet in the manifest, shard 2 half written
            (Path(root) / ".shard_00002.pt.tmp").write_bytes(b"half a shard")
            raise Killed
        return real_write_manifest(root, manifest)

    monkeypatch.setattr(generate_shards, "write_manifest", write_manifest_then_die)
    out = tmp_path / "set"
    with pytest.raises(Killed):
        generate(compose_generate(ckpt, out))
    monkeypatch.undo()
    listed = json.loads((out / MANIFEST_NAME).read_text())["shards"]
    assert [s["file"] for s in listed] == ["shard_00000.pt"]
    assert (out / "shard_00001.pt").is_file()
    with pytest.raises(DataError, match="partial, 1 of 8 shards"):
        read_generated_set(out)

    metrics = generate(compose_generate(ckpt, out))
    assert metrics["images_made"] == 30 - 8  # shards 0 and 1 were kept
    resumed = read_generated_set(out)
    assert torch.equal(resumed.images, reference.images)
    assert torch.equal(resumed.labels, torch.arange(10).repeat_interleave(3))
    assert len(torch.unique(resumed.images.flatten(1), dim=0)) == 30
    assert [s["file"] for s in resumed.manifest["shards"]] == [
        f"shard_{k:05d}.pt" for k in range(8)
    ]
    assert sorted(p.name for p in out.glob("shard_*")) == [f"shard_{k:05d}.pt" for k in range(8)]
    assert not list(out.glob(".*"))


def test_rerun_on_a_complete_set_makes_nothing(ckpt, tmp_path):
    generate(compose_generate(ckpt, tmp_path / "set"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "set").glob("shard_*")}
    assert generate(compose_generate(ckpt, tmp_path / "set"))["images_made"] == 0
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "set").glob("shard_*")}


def test_export_png_writes_the_set_as_class_folders_imagefolder_reads(ckpt, tmp_path):
    metrics = generate(compose_generate(ckpt, tmp_path / "set", "export=png"))
    gen = read_generated_set(tmp_path / "set")
    assert metrics["png"] == str(tmp_path / "set" / "png")
    folder = ImageFolder(metrics["png"])
    assert folder.classes == [f"{k:02d}_{k}" for k in range(10)]
    # The grey PNGs come back as RGB from ImageFolder's loader; any channel is the image.
    images = torch.stack([torch.from_numpy(np.array(image))[..., 0] for image, _ in folder])
    assert torch.equal(images[:, None], gen.images)
    assert [label for _, label in folder.samples] == gen.labels.tolist()
    # A rerun (resume) finds the set and the export complete and keeps both.
    assert generate(compose_generate(ckpt, tmp_path / "set", "export=png"))["images_made"] == 0


@pytest.mark.slow
def test_same_set_from_one_or_two_processes(ckpt, tmp_path):
    generate(compose_generate(ckpt, tmp_path / "one"))
    # Fabric starts the second process by running the command line again: a process of its
    # own. One thread per process: two processes on a 2-core CPU.
    result = run_process(
        "-m",
        "diffusion_lab.generate",
        f"ckpt={ckpt}",
        *SMALL,
        f"out={tmp_path / 'two'}",
        f"hydra.run.dir={tmp_path / 'run2'}",
        "fabric.accelerator=cpu",
        "fabric.devices=2",
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    one, two = read_generated_set(tmp_path / "one"), read_generated_set(tmp_path / "two")
    assert torch.equal(one.images, two.images)
    assert [s["sha256"] for s in one.manifest["shards"]] == [
        s["sha256"] for s in two.manifest["shards"]
    ]


@pytest.mark.slow
def test_command_as_users_type_it(run_cli, ckpt, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("generate", f"ckpt={ckpt}", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_generated_set(run_dir / "set").labels) == 30
    png_pixels(run_dir / "set" / "contact_sheet.png")
    assert json.loads((run_dir / "metrics.json").read_text())["num_images"] == 30
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("generate: a set of 30 images, 30 made now (")
    assert summary.endswith(f"; outputs in {run_dir / 'set'}")


def test_non_finite_samples_are_refused_before_their_shard_is_written(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(
        diffusion, "ddim_sample", lambda net, schedule, x_T, *args, **kwargs: x_T * float("nan")
    )
    message = "shard shard_00000.pt: the sampler returned NaN or Inf for 4 of 4 images"
    with pytest.raises(NonFiniteSamples, match=re.escape(message)):
        generate(compose_generate(ckpt, tmp_path / "set"))
    assert not list((tmp_path / "set").glob("shard_*"))


def test_a_run_that_failed_before_its_first_shard_does_not_block_the_corrected_one(
    ckpt, tmp_path, monkeypatch
):
    with monkeypatch.context() as patch:
        patch.setattr(diffusion, "ddim_sample", lambda net, schedule, x_T, *a, **k: x_T * torch.nan)
        with pytest.raises(NonFiniteSamples):
            generate(compose_generate(ckpt, tmp_path / "set"))
    # The corrected run changes a setting of the set's identity, and is still accepted.
    generate(compose_generate(ckpt, tmp_path / "set", "w=0"))
    assert read_generated_set(tmp_path / "set").manifest["w"] == 0


def test_a_set_larger_than_the_free_disk_is_refused_before_anything_is_written(
    ckpt, tmp_path, monkeypatch
):
    out = tmp_path / "new" / "set"
    # 30 images of 1x8x8 with int64 labels in one shard (+4 KiB): 6256 bytes, 1000 free.
    monkeypatch.setattr(generate_shards.shutil, "disk_usage", lambda path: Usage(free=1000))
    message = f"out={out}: the set needs about 6.1 KiB (30 images of 1x8x8) but only 1000 B is free"
    with pytest.raises(DataError, match=re.escape(message)):
        generate(compose_generate(ckpt, out, "per_class=3", "shard_size=30"))
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    # The real disk: one image per class more than fits (72 bytes an image).
    per_class = shutil.disk_usage(tmp_path).free // (10 * 72) + 1
    huge = [f"per_class={per_class}", f"shard_size={per_class}", "batch_size=100"]
    with pytest.raises(DataError, match=r"the set needs about .* but only .* is free there"):
        generate(compose_generate(ckpt, out, *huge))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("per_class=-2", "per_class=-2: must be a positive integer"),
        ("shard_size=0", "shard_size=0: must be a positive integer"),
        ("fabric.precision=bf16-true", "fabric.precision='bf16-true': must be 32-true, bf16-mixed"),
    ],
)
def test_bad_settings_are_refused_before_any_output(ckpt, tmp_path, override, message):
    with pytest.raises(UserFacingError, match=re.escape(message)):
        generate(compose_generate(ckpt, tmp_path / "set", override))
    assert not (tmp_path / "set").exists()


def incompatible_checkpoint(tmp_path: Path) -> Path:
    return save_tiny_checkpoint(tmp_path / "wide.ckpt", net_changes={"ch": 16})


def dataless_checkpoint(tmp_path: Path) -> Path:
    return save_tiny_checkpoint(tmp_path / "dataless.ckpt", drop="data")


def diverged_checkpoint(tmp_path: Path) -> Path:
    """A tiny checkpoint with one NaN weight, as a diverged run would have written it."""
    path = save_tiny_checkpoint(tmp_path / "diverged.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    next(iter(checkpoint["state_dict"].values())).view(-1)[0] = float("nan")
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (incompatible_checkpoint, "wide.ckpt: its weights do not fit the model its stored config"),
        (dataless_checkpoint, "dataless.ckpt: its stored config lacks data.num_classes"),
    ],
)
def test_unusable_checkpoints_are_refused(tmp_path, make, message):
    with pytest.raises(UserFacingError, match=re.escape(message)):
        generate(compose_generate(make(tmp_path), tmp_path / "set"))
    assert not (tmp_path / "set").exists()


@pytest.mark.parametrize("change", ["other_checkpoint", "w=1.0", "seed=1", "sampler.steps=4"])
def test_out_holding_a_different_set_is_refused_untouched(ckpt, tmp_path, change):
    out = tmp_path / "set"
    generate(compose_generate(ckpt, out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if change == "other_checkpoint":
        cfg = compose_generate(save_tiny_checkpoint(tmp_path / "other.ckpt", seed=1), out)
        key = "checkpoint_sha256"
    else:
        cfg = compose_generate(ckpt, out, change)
        key = change.split("=")[0].split(".")[0]
    with pytest.raises(DataError, match=re.escape(f"out={out}: holds a set made with {key}=")):
        generate(cfg)
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}


def test_corrupt_shard_is_refused_on_resume_and_on_read(ckpt, tmp_path):
    out = tmp_path / "set"
    generate(compose_generate(ckpt, out))
    shard = out / "shard_00003.pt"
    shard.write_bytes(shard.read_bytes()[:-20])
    for attempt in (lambda: generate(compose_generate(ckpt, out)), lambda: read_generated_set(out)):
        with pytest.raises(DataError, match=re.escape("shard_00003.pt does not match its sha256")):
            attempt()


# generate's real entry point, each shard held back until the file argv[1] exists, so that a
# second run surely starts while this one writes.
HELD_GENERATE = """
import sys, time
from pathlib import Path
import diffusion_lab.generate as g
import diffusion_lab.jobs.generate_shards as shards

go = Path(sys.argv.pop(1))
make_shard = shards.make_shard

def held(*args, **kwargs):
    while not go.exists():
        time.sleep(0.05)
    return make_shard(*args, **kwargs)

shards.make_shard = held
g.main()
"""


@pytest.mark.slow
def test_second_generate_on_one_folder_gets_one_line_and_the_first_finishes(
    run_cli, ckpt, tmp_path
):
    """The first run is a process of its own, held while it writes; the second runs here."""
    out, go = tmp_path / "set", tmp_path / "go"
    settings = [f"ckpt={ckpt}", *SMALL, f"out={out}"]
    first = start_process(
        "-c", HELD_GENERATE, str(go), *settings, f"hydra.run.dir={tmp_path}/1", cwd=tmp_path
    )
    try:
        while not (out / ".lock").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.1)
        second = run_cli("generate", *settings, f"hydra.run.dir={tmp_path}/2", cwd=tmp_path)
        assert second.error_line() == (
            f"error: out={out}: another process (pid {first.pid}) is writing into it; wait for "
            "it to finish or pass another folder"
        )
        assert not (tmp_path / "2").exists()
        go.touch()
        _, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr[-3000:]
    assert len(read_generated_set(out).labels) == 30
    assert not (out / ".lock").exists()
