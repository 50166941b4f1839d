"""Tests for classifier-free guidance, the eps-MSE loss and the ancestral sampler."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffusion_lab.diffusion import (
    NoiseSchedule,
    ancestral_sample,
    drop_labels,
    eps_mse,
    guided_eps,
    linear_betas,
)
from diffusion_lab.diffusion.samplers import step_variance

NUM_CLASSES = 10
NULL = NUM_CLASSES


class ToyNet(nn.Module):
    """A small deterministic eps-network that depends non-linearly on x, t and the label."""

    def __init__(self, channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
            self.label = nn.Embedding(NUM_CLASSES + 1, channels)
            self.time = nn.Linear(1, channels)

    def forward(self, x, t, y):
        cond = self.label(y) + self.time(t.float()[:, None] / 100.0)
        return torch.tanh(self.conv(x) + cond[:, :, None, None])


class CountingNet(nn.Module):
    """Wraps a network and records the batch size of every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batch_sizes: list[int] = []

    def forward(self, x, t, y):
        assert x.shape[0] == t.shape[0] == y.shape[0]
        self.batch_sizes.append(x.shape[0])
        return self.inner(x, t, y)


class OracleNet(nn.Module):
    """Returns the exact eps of x_t for a known x0: (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor) -> None:
        super().__init__()
        self.schedule = schedule
        self.x0 = x0

    def forward(self, x, t, y):
        x0 = self.x0.repeat(x.shape[0] // self.x0.shape[0], 1, 1, 1)
        sqrt_abar = self.schedule.sqrt_alpha_bars[t][:, None, None, None]
        sqrt_one_minus = self.schedule.sqrt_one_minus_alpha_bars[t][:, None, None, None]
        return (x - sqrt_abar * x0) / sqrt_one_minus


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(linear_betas(20, 1e-3, 0.2))


# --- drop_labels ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_labels_rate_and_value(p):
    n = 200_000
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=torch.Generator().manual_seed(0))
    dropped = drop_labels(labels, p, NULL, generator=torch.Generator().manual_seed(1))
    assert dropped.shape == labels.shape
    assert dropped.dtype == labels.dtype
    changed = dropped != labels
    # Every changed label is the null label, every other one is untouched.
    assert bool((dropped[changed] == NULL).all())
    assert bool((dropped[~changed] == labels[~changed]).all())
    rate = changed.double().mean().item()
    std_err = math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) < 4 * std_err


def test_drop_labels_p_zero_is_identity():
    labels = torch.arange(NUM_CLASSES).repeat(10)
    assert torch.equal(drop_labels(labels, 0.0, NULL), labels)


def test_drop_labels_reproducible_with_seeded_generator():
    labels = torch.randint(0, NUM_CLASSES, (1000,), generator=torch.Generator().manual_seed(0))
    a = drop_labels(labels, 0.3, NULL, generator=torch.Generator().manual_seed(7))
    b = drop_labels(labels, 0.3, NULL, generator=torch.Generator().manual_seed(7))
    c = drop_labels(labels, 0.3, NULL, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --- guided_eps -----------------------------------------------------------------------------


@pytest.mark.parametrize("w", [0.0, 1.8])
def test_guided_eps_matches_two_separate_passes(w):
    net = ToyNet().eval()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, 8, 8, generator=generator)
    t = torch.tensor([0, 3, 7, 11, 19])
    y = torch.tensor([0, 1, 2, 9, 4])
    with torch.no_grad():
        eps = guided_eps(net, x, t, y, w, NULL)
        cond = net(x, t, y)
        uncond = net(x, t, torch.full_like(y, NULL))
    expected = (1 + w) * cond - w * uncond
    assert eps.shape == x.shape
    torch.testing.assert_close(eps, expected, rtol=1e-5, atol=1e-6)
    if w > 0:
        # The guidance actually does something for this net.
        assert not torch.allclose(eps, cond)


@pytest.mark.parametrize(("w", "expected_batch"), [(0.0, 4), (0.5, 8), (1.8, 8)])
def test_guided_eps_does_one_forward(w, expected_batch):
    net = CountingNet(ToyNet())
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        guided_eps(net, x, torch.arange(4), torch.arange(4), w, NULL)
    assert net.batch_sizes == [expected_batch]


# --- eps_mse --------------------------------------------------------------------------------


class LinearNet(nn.Module):
    """eps_theta(x, t, y) = 0.5 x + 0.01 t + 0.1 y, broadcast per sample."""

    def forward(self, x, t, y):
        return 0.5 * x + (0.01 * t.float() + 0.1 * y.float())[:, None, None, None]


def test_eps_mse_matches_hand_computation(schedule):
    generator = torch.Generator().manual_seed(5)
    x0 = torch.rand(4, 2, 3, 3, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0, 5, 12, 19])
    y = torch.tensor([3, 0, 7, 10])
    loss = eps_mse(LinearNet(), schedule, x0, t, eps, y)
    assert loss.shape == (4,)
    for i in range(4):
        abar = schedule.alpha_bars[t[i]].double().item()
        total = 0.0
        values = zip(x0[i].flatten().tolist(), eps[i].flatten().tolist(), strict=True)
        for x0_v, eps_v in values:
            xt = math.sqrt(abar) * x0_v + math.sqrt(1 - abar) * eps_v
            pred = 0.5 * xt + 0.01 * t[i].item() + 0.1 * y[i].item()
            total += (pred - eps_v) ** 2
        assert loss[i].item() == pytest.approx(total / x0[i].numel(), rel=1e-5)


def test_eps_mse_is_zero_for_the_oracle(schedule):
    generator = torch.Generator().manual_seed(6)
    x0 = torch.rand(6, 3, 4, 4, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0, 1, 5, 10, 18, 19])
    loss = eps_mse(OracleNet(schedule, x0), schedule, x0, t, eps, torch.zeros(6, dtype=torch.long))
    assert loss.shape == (6,)
    torch.testing.assert_close(loss, torch.zeros(6), rtol=0, atol=1e-9)
    # ... and clearly positive for a net that predicts nothing.
    zero_net_loss = eps_mse(LinearNet(), schedule, x0, t, eps, torch.zeros(6, dtype=torch.long))
    assert bool((zero_net_loss > 1e-2).all())


# --- ancestral_sample -----------------------------------------------------------------------


def _sample(net, schedule, x_T, seed, **kwargs):
    labels = torch.arange(x_T.shape[0]) % NUM_CLASSES
    generator = torch.Generator().manual_seed(seed)
    return ancestral_sample(net, schedule, x_T, labels, generator, null_label=NULL, **kwargs)


def test_ancestral_sample_shape_and_reproducibility(schedule):
    net = ToyNet().eval()
    x_T = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = _sample(net, schedule, x_T, seed=11)
    b = _sample(net, schedule, x_T, seed=11)
    c = _sample(net, schedule, x_T, seed=12)
    assert a.shape == x_T.shape
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ancestral_sample_progress_sees_steps_in_descending_order(schedule):
    calls = []

    def progress(steps):
        steps = list(steps)
        calls.append(steps)
        return steps

    net = CountingNet(ToyNet())
    _sample(net, schedule, torch.randn(2, 3, 8, 8), seed=0, progress=progress)
    assert calls == [list(range(schedule.T - 1, -1, -1))]
    # One guided (2B) forward per step.
    assert net.batch_sizes == [4] * schedule.T


class WildNet(nn.Module):
    """A network whose predictions push x0 far outside the data range."""

    def forward(self, x, t, y):
        return -10.0 * x + 3.0


def test_ancestral_sample_clip_keeps_output_in_range(schedule):
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    clipped = _sample(WildNet(), schedule, x_T, seed=0, clip_x0=True)
    assert bool(clipped.isfinite().all())
    assert clipped.min().item() >= -1.0
    assert clipped.max().item() <= 1.0
    unclipped = _sample(WildNet(), schedule, x_T, seed=0, clip_x0=False)
    assert unclipped.abs().max().item() > 1.0


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip_x0", [True, False])
@pytest.mark.parametrize("w", [0.0, 1.8])
def test_ancestral_sample_recovers_x0_with_oracle(variance, clip_x0, w):
    schedule = NoiseSchedule(linear_betas(500, 1e-4, 0.028))
    generator = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 3, 8, 8, generator=generator) * 1.8 - 0.9
    x_T = torch.randn(x0.shape, generator=generator)
    out = _sample(
        OracleNet(schedule, x0), schedule, x_T, seed=9, w=w, variance=variance, clip_x0=clip_x0
    )
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


def test_step_variance_choices(schedule):
    assert torch.equal(step_variance(schedule, "fixed_small"), schedule.posterior_variance)
    assert torch.equal(step_variance(schedule, "fixed_large"), schedule.betas)
    with pytest.raises(ValueError, match="bogus"):
        step_variance(schedule, "bogus")


def test_ancestral_sample_rejects_unknown_variance(schedule):
    with pytest.raises(ValueError, match="fixed_small"):
        _sample(ToyNet(), schedule, torch.randn(1, 3, 8, 8), seed=0, variance="bogus")
