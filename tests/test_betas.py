"""The named beta schedules against their closed forms, and pinned values of each release.

Closed forms are evaluated with plain Python floats and `math`, not with the torch code.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from diffusion_lab.config.source import config_files
from diffusion_lab.diffusion import (
    BETA_SCHEDULES,
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    quadratic_betas,
    sigmoid_betas,
)

CASES = [(10, 1e-4, 0.028), (500, 1e-4, 0.028), (1000, 1e-4, 0.02), (2, 0.1, 0.2)]


def cosine_f(u, s=0.008):
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


@pytest.mark.parametrize(("T", "beta_1", "beta_T"), CASES)
def test_quadratic_is_linear_in_sqrt_beta(T, beta_1, beta_T):
    betas = quadratic_betas(T, beta_1, beta_T)
    lo, hi = math.sqrt(beta_1), math.sqrt(beta_T)
    expected = [(lo + (hi - lo) * i / (T - 1)) ** 2 for i in range(T)]
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    torch.testing.assert_close(
        betas, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert betas[0].item() == pytest.approx(beta_1, rel=1e-12)
    assert betas[-1].item() == pytest.approx(beta_T, rel=1e-12)
    # Below the linear schedule in between (sqrt is concave), equal at the ends.
    assert bool((betas <= linear_betas(T, beta_1, beta_T) + 1e-15).all())


@pytest.mark.parametrize(("T", "beta_1", "beta_T"), CASES)
def test_sigmoid_is_geodiffs_formula(T, beta_1, beta_T):
    betas = sigmoid_betas(T, beta_1, beta_T)
    xs = [-6 + 12 * i / (T - 1) for i in range(T)]
    expected = [beta_1 + (beta_T - beta_1) / (1 + math.exp(-x)) for x in xs]
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    torch.testing.assert_close(
        betas, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert bool((betas.diff() > 0).all())
    assert bool(((betas > beta_1) & (betas < beta_T)).all())


@pytest.mark.parametrize("T", [10, 500, 1000, 4000])
def test_cosine_alpha_bar_is_f_over_f0_before_clipping(T):
    betas = cosine_betas(T)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    alpha_bars = torch.cumprod(1.0 - betas, dim=0)
    # Index t is the paper's step t + 1: alpha_bar[t] = f((t + 1) / T) / f(0).
    expected = [cosine_f((t + 1) / T) / cosine_f(0.0) for t in range(T)]
    unclipped = betas < 0.999
    assert not bool(unclipped[-1])  # f(1) = 0: the last beta is clipped
    torch.testing.assert_close(
        alpha_bars[unclipped],
        torch.tensor(expected, dtype=torch.float64)[unclipped],
        rtol=1e-9,
        atol=1e-15,
    )
    for t in range(T):
        if unclipped[t]:
            prev = cosine_f(t / T) / cosine_f(0.0)
            assert betas[t].item() == pytest.approx(1 - expected[t] / prev, rel=1e-9)


def test_cosine_clips_at_max_beta_and_keeps_s():
    assert cosine_betas(500)[-1].item() == 0.999
    assert cosine_betas(500, max_beta=0.5).max().item() == 0.5
    # s keeps beta_1 = 1 - f(1/T) / f(0) from being tiny near t = 0 (the paper's reason for it).
    assert cosine_betas(500, s=0.001)[0] < cosine_betas(500, s=0.008)[0]


def test_cosine_leaves_almost_no_signal_and_linear_study_leaves_little():
    assert NoiseSchedule(cosine_betas(500)).alpha_bars[-1].item() < 1e-7
    assert NoiseSchedule(linear_betas(500, 1e-4, 0.028)).alpha_bars[-1].item() < 1e-3
    assert NoiseSchedule(linear_betas(500, 1e-4, 0.01)).alpha_bars[-1].item() > 0.05


# Values of each released schedule at T=10, pinned: a named schedule never changes.
PINNED = {
    "linear": (0.0001, 0.0125, 0.028),
    "cosine": (0.02790726288603096, 0.23728153019052467, 0.999),
    "quadratic": (0.0001, 0.0063880592854657515, 0.028),
    "sigmoid": (0.0001689861860701102, 0.009564897311433698, 0.027931013813929893),
}


@pytest.mark.parametrize("name", sorted(BETA_SCHEDULES))
def test_released_schedules_are_pinned(name):
    fn = BETA_SCHEDULES[name]
    betas = fn(10) if name == "cosine" else fn(10, 1e-4, 0.028)
    actual = (betas[0].item(), betas[4].item(), betas[9].item())
    assert actual == pytest.approx(PINNED[name], rel=1e-12)


def test_every_released_schedule_has_a_config_and_every_config_is_released():
    folder = config_files().joinpath("schedule")
    configs = {p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")}
    assert configs == set(BETA_SCHEDULES) == set(PINNED)
    for name, fn in BETA_SCHEDULES.items():
        node = OmegaConf.create(folder.joinpath(f"{name}.yaml").read_text())
        assert node.betas._target_ == f"diffusion_lab.diffusion.{fn.__name__}"


@pytest.mark.parametrize("name", sorted(BETA_SCHEDULES))
def test_every_schedule_builds_a_valid_noise_schedule(name, compose_train):
    from hydra.utils import instantiate

    cfg = compose_train(f"schedule={name}", "T=500")
    schedule = instantiate(cfg.schedule)
    assert isinstance(schedule, NoiseSchedule) and schedule.T == 500
    assert bool((schedule.alpha_bars.diff() < 0).all())
