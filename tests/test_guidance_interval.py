"""The guidance interval of every sampler (one conditional pass outside it, one batched pass of
2B inside) and the count of network evaluations per image."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor, nn

from diffusion_lab.diffusion import (
    NoiseSchedule,
    ancestral_sample,
    ddim_sample,
    dpmpp_2m_sample,
    guidance_weight,
    linear_betas,
    network_evaluations,
)
from diffusion_lab.diffusion.nfe import sampler_timesteps
from tests.test_guidance_and_sampling import NULL, ToyNet

T = 20
BATCH = 3
# Each sampler with the settings it is called with, and its name in conf/sampler/.
SAMPLERS = {
    "ancestral": (ancestral_sample, {}),
    "ddim": (ddim_sample, {"steps": 7}),
    "dpmpp_2m": (dpmpp_2m_sample, {"steps": 7}),
}


class CallLog(nn.Module):
    """Wraps a network; records (index t, batch size, labels) of every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ToyNet()
        self.calls: list[tuple[int, int, Tensor]] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        assert bool((t == t[0]).all())
        self.calls.append((int(t[0]), x.shape[0], y.clone()))
        return self.inner(x, t, y)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule(linear_betas(T, 1e-3, 0.2))


def sample(name: str, net: nn.Module, schedule: NoiseSchedule, **kwargs) -> Tensor:
    sampler, settings = SAMPLERS[name]
    x_T = torch.randn(BATCH, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 4, 9])
    generator = torch.Generator().manual_seed(1)
    run = functools.partial(sampler, net, schedule, x_T, labels, generator, null_label=NULL)
    return run(**{"w": 1.8, **settings, **kwargs})


@pytest.mark.parametrize("name", SAMPLERS)
def test_outside_the_interval_one_conditional_pass_inside_one_batched_pair(name, schedule):
    net = CallLog()
    sample(name, net, schedule, guidance_interval=[4, 12])
    visited = sampler_timesteps(name, T, **SAMPLERS[name][1])
    assert [t for t, _, _ in net.calls] == visited
    for t, batch, labels in net.calls:
        if 4 <= t <= 12:  # both ends included
            assert batch == 2 * BATCH and labels[BATCH:].eq(NULL).all()
        else:
            assert batch == BATCH and labels.tolist() == [0, 4, 9]
    # Some steps of each kind, so the test checks both branches.
    assert {batch for _, batch, _ in net.calls} == {BATCH, 2 * BATCH}


@pytest.mark.parametrize("name", SAMPLERS)
def test_an_interval_over_every_index_is_the_plain_guided_sampler(name, schedule):
    everywhere = sample(name, ToyNet(), schedule, guidance_interval=[0, T - 1])
    assert torch.equal(everywhere, sample(name, ToyNet(), schedule, guidance_interval=None))


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m"])
def test_an_interval_between_visited_indices_is_the_conditional_sampler(name, schedule):
    """w applies nowhere: the same samples as w = 0."""
    assert {17, 18}.isdisjoint(sampler_timesteps(name, T, **SAMPLERS[name][1]))
    between = sample(name, ToyNet(), schedule, guidance_interval=[17, 18])
    assert torch.equal(between, sample(name, ToyNet(), schedule, w=0.0))


def test_guidance_weight_is_w_inside_the_closed_interval_and_zero_outside():
    assert [guidance_weight(t, 2.0, [3, 5]) for t in range(2, 7)] == [0.0, 2.0, 2.0, 2.0, 0.0]
    assert guidance_weight(0, 2.0, None) == 2.0


# --- network evaluations per image -----------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize(("w", "interval"), [(1.8, None), (1.8, [4, 12]), (0.0, None)])
def test_the_count_is_what_the_sampler_runs(name, w, interval, schedule):
    net = CallLog()
    sample(name, net, schedule, w=w, guidance_interval=interval)
    runs = sum(batch for _, batch, _ in net.calls) // BATCH
    count = network_evaluations(name, T, w, interval, **SAMPLERS[name][1])
    assert count == runs


@pytest.mark.parametrize(
    ("name", "settings", "interval", "expected"),
    [
        ("ancestral", {}, None, 2 * 500),  # every index, guided
        ("ddim", {"steps": 50}, None, 2 * 50),
        ("dpmpp_2m", {"steps": 20}, None, 2 * 20),
        # linspace visits round(24.95 i), i = 20..1: i = 4..16 (100..399) lie in [100, 400].
        ("dpmpp_2m", {"steps": 20}, [100, 400], 20 + 13),
        # ancestral visits every index: 301 of them in [100, 400].
        ("ancestral", {}, [100, 400], 500 + 301),
    ],
)
def test_counts_at_the_studys_schedule(name, settings, interval, expected):
    assert network_evaluations(name, 500, 1.8, interval, **settings) == expected


def test_an_unknown_sampler_has_no_count():
    with pytest.raises(ValueError, match="sampler='heun': expected one of ancestral, ddim"):
        network_evaluations("heun", 500, 1.8)
