"""Tests for the learning-rate schedules (warm-up + cosine, warm-up + linear, constant)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffusion_lab.lit.lr_schedules import (
    constant,
    warmup_cosine,
    warmup_cosine_factor,
    warmup_linear,
    warmup_linear_factor,
)

TOTAL = 1000
WARMUP = 0.1
PEAK = 2.5
BASE_LR = 1e-4


def factor(step, total=TOTAL):
    return warmup_cosine_factor(step, total, WARMUP, PEAK)


def test_starts_at_one():
    assert factor(0) == 1.0


def test_reaches_peak_at_end_of_warmup():
    warmup_steps = round(WARMUP * TOTAL)
    assert factor(warmup_steps) == pytest.approx(PEAK)
    # Linear in between.
    assert factor(warmup_steps // 2) == pytest.approx(1.0 + (PEAK - 1.0) / 2)
    assert factor(warmup_steps - 1) < PEAK


def test_monotone_up_then_down():
    warmup_steps = round(WARMUP * TOTAL)
    values = [factor(step) for step in range(TOTAL + 1)]
    rising, falling = values[: warmup_steps + 1], values[warmup_steps:]
    assert all(a < b for a, b in itertools.pairwise(rising))
    assert all(a > b for a, b in itertools.pairwise(falling))
    assert max(values) == pytest.approx(PEAK)


def test_ends_at_zero():
    assert factor(TOTAL) == pytest.approx(0.0, abs=1e-12)
    # Past the end it stays at zero instead of rising along the cosine again.
    assert factor(TOTAL + 100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_cosine_values_during_decay(fraction):
    warmup_steps = round(WARMUP * TOTAL)
    step = warmup_steps + round(fraction * (TOTAL - warmup_steps))
    expected = PEAK * 0.5 * (1.0 + math.cos(math.pi * fraction))
    assert factor(step) == pytest.approx(expected, rel=1e-9)
    if fraction == 0.5:
        assert factor(step) == pytest.approx(PEAK / 2)


def test_tiny_total_steps_keeps_at_least_one_warmup_step():
    # round(0.1 * 3) = 0 warm-up steps would divide by zero; max(1, .) makes it one.
    assert warmup_cosine_factor(0, 3, WARMUP, PEAK) == 1.0
    assert warmup_cosine_factor(1, 3, WARMUP, PEAK) == pytest.approx(PEAK)
    assert warmup_cosine_factor(3, 3, WARMUP, PEAK) == pytest.approx(0.0, abs=1e-12)


def run_lrs(make_scheduler, steps):
    """Drive a real optimizer for `steps` steps; the lr in effect at each step."""
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = make_scheduler(optimizer, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        param.sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_warmup_cosine_drives_optimizer():
    total = 200
    lrs = run_lrs(warmup_cosine, total)
    assert lrs[0] == pytest.approx(BASE_LR)
    assert lrs[20] == pytest.approx(PEAK * BASE_LR)
    assert lrs[110] == pytest.approx(PEAK * BASE_LR / 2)
    assert lrs[total] == pytest.approx(0.0, abs=1e-15)
    expected = [BASE_LR * warmup_cosine_factor(s, total, WARMUP, PEAK) for s in range(total + 1)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_warmup_cosine_respects_its_arguments():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = warmup_cosine(optimizer, 100, warmup_fraction=0.5, peak_factor=4.0)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4.0 * BASE_LR)


def test_constant_keeps_base_lr():
    lrs = run_lrs(constant, 50)
    assert lrs == pytest.approx([BASE_LR] * 51, rel=0, abs=0)


# --- warm-up then linear decay ---------------------------------------------------------------


def linear_factor(step, total=TOTAL):
    return warmup_linear_factor(step, total, WARMUP, PEAK)


def test_linear_shares_the_warmup_of_cosine():
    warmup_steps = round(WARMUP * TOTAL)
    for step in range(warmup_steps + 1):
        assert linear_factor(step) == pytest.approx(factor(step), rel=1e-12)
    assert linear_factor(warmup_steps) == pytest.approx(PEAK)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_linear_decay_values(fraction):
    warmup_steps = round(WARMUP * TOTAL)
    step = warmup_steps + round(fraction * (TOTAL - warmup_steps))
    assert linear_factor(step) == pytest.approx(PEAK * (1.0 - fraction), abs=1e-12)


def test_linear_decay_is_a_straight_line_to_zero_and_stays_there():
    warmup_steps = round(WARMUP * TOTAL)
    decay = [linear_factor(step) for step in range(warmup_steps, TOTAL + 1)]
    slopes = [b - a for a, b in itertools.pairwise(decay)]
    assert slopes == pytest.approx([-PEAK / (TOTAL - warmup_steps)] * len(slopes), rel=1e-9)
    assert linear_factor(TOTAL + 50) == 0.0


def test_warmup_linear_drives_optimizer():
    total = 200
    lrs = run_lrs(warmup_linear, total)
    assert lrs[0] == pytest.approx(BASE_LR)
    assert lrs[20] == pytest.approx(PEAK * BASE_LR)
    assert lrs[110] == pytest.approx(PEAK * BASE_LR / 2)
    assert lrs[total] == pytest.approx(0.0, abs=1e-15)


def test_linear_lr_schedule_config_builds_warmup_linear(compose_train):
    from hydra.utils import instantiate

    cfg = compose_train("lr_schedule=linear")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = instantiate(cfg.lr_schedule)(optimizer, 100)
    assert scheduler.lr_lambdas[0](55) == pytest.approx(warmup_linear_factor(55, 100, 0.1, 2.5))
