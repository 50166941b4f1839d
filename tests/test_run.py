"""The trained-run API: a checkpoint's data spec, and sampling from it with overrides."""

from __future__ import annotations

import functools

import pytest
import torch

from diffusion_lab.diffusion import ddim_sample
from diffusion_lab.runs.data_spec import DataSpec
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.utils.errors import UserFacingError
from tests.test_generate import save_tiny_checkpoint


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> TrainedRun:
    """A tiny trained run whose weights are perturbed (fresh ones predict eps = 0 everywhere)."""
    trained = TrainedRun.load(save_tiny_checkpoint(tmp_path_factory.mktemp("run") / "tiny.ckpt"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trained.module.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return trained


def test_a_checkpoint_knows_its_data(run):
    assert run.spec == DataSpec(1, 8, 10, tuple(str(k) for k in range(10)))
    assert run.spec.shape == (1, 8, 8)
    assert run.config["T"] == 20 and run.module.schedule.T == 20


def test_sampling_is_a_function_of_labels_seed_and_settings(run):
    labels = torch.arange(10)
    images = run.sample(labels, seed=3)
    assert images.dtype == torch.uint8 and images.shape == (10, 1, 8, 8)
    assert torch.equal(images, run.sample(labels, seed=3))
    assert not torch.equal(images, run.sample(labels, seed=4))
    assert not torch.equal(images, run.sample(labels, seed=3, w=0.0))
    ddim = functools.partial(ddim_sample, w=1.8, steps=20)
    assert not torch.equal(run.sample(labels, 3, ddim), run.sample(labels, 3, ddim, steps=5))
    assert not run.module.net.training


def test_a_generator_is_continued_not_reseeded(run):
    """generate draws several batches of one shard from one generator, one after another."""
    labels = torch.arange(4)
    generator = torch.Generator().manual_seed(5)
    first, second = run.sample(labels, generator), run.sample(labels, generator)
    assert not torch.equal(first, second)
    assert torch.equal(first, run.sample(labels, 5))


def test_a_checkpoint_without_data_settings_is_one_line(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "dataless.ckpt", drop="data")
    with pytest.raises(UserFacingError, match=r"dataless\.ckpt: its stored config lacks data\."):
        TrainedRun.load(path)
