"""Tests for the linear beta schedule and the DDPM coefficients of NoiseSchedule.

Expected values are computed independently, in float64 with plain Python loops and `math`,
not with the vectorised torch code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusion_lab.diffusion import NoiseSchedule, linear_betas

# The study's Part 1 schedule.
STUDY_T, STUDY_BETA_1, STUDY_BETA_T = 500, 1e-4, 0.028
BUFFERS = (
    "betas",
    "alphas",
    "alpha_bars",
    "alpha_bars_prev",
    "sqrt_alpha_bars",
    "sqrt_one_minus_alpha_bars",
    "posterior_variance",
    "posterior_coef_x0",
    "posterior_coef_xt",
    "snr",
)


def python_betas(T, beta_1, beta_T):
    """beta_1 + (beta_T - beta_1) * i / (T - 1) for i = 0..T-1, plain floats."""
    return [beta_1 + (beta_T - beta_1) * i / (T - 1) for i in range(T)]


def closed_forms(betas):
    """Every coefficient of DDPM (Ho et al. 2020, eqs. 4, 6, 7) by a plain loop, in float64."""
    out = {name: [] for name in BUFFERS}
    running = 1.0
    for beta in betas:
        abar_prev = running
        alpha = 1.0 - beta
        running *= alpha
        abar = running
        out["betas"].append(beta)
        out["alphas"].append(alpha)
        out["alpha_bars"].append(abar)
        out["alpha_bars_prev"].append(abar_prev)
        out["sqrt_alpha_bars"].append(math.sqrt(abar))
        out["sqrt_one_minus_alpha_bars"].append(math.sqrt(1.0 - abar))
        out["posterior_variance"].append(beta * (1.0 - abar_prev) / (1.0 - abar))
        out["posterior_coef_x0"].append(beta * math.sqrt(abar_prev) / (1.0 - abar))
        out["posterior_coef_xt"].append((1.0 - abar_prev) * math.sqrt(alpha) / (1.0 - abar))
        out["snr"].append(abar / (1.0 - abar))
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in out.items()}


@pytest.fixture(scope="module")
def study_schedule():
    return NoiseSchedule(linear_betas(STUDY_T, STUDY_BETA_1, STUDY_BETA_T))


# --- linear_betas -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("T", "beta_1", "beta_T"), [(2, 0.1, 0.2), (10, 1e-4, 0.02), (500, 1e-4, 0.028)]
)
def test_linear_betas_endpoints_length_spacing_dtype(T, beta_1, beta_T):
    betas = linear_betas(T, beta_1, beta_T)
    assert betas.dtype == torch.float64
    assert betas.shape == (T,)
    assert betas[0].item() == pytest.approx(beta_1, rel=1e-12)
    assert betas[-1].item() == pytest.approx(beta_T, rel=1e-12)
    step = (beta_T - beta_1) / (T - 1)
    torch.testing.assert_close(
        betas.diff(), torch.full((T - 1,), step, dtype=torch.float64), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(
        betas,
        torch.tensor(python_betas(T, beta_1, beta_T), dtype=torch.float64),
        rtol=0,
        atol=1e-15,
    )


# --- NoiseSchedule coefficients -------------------------------------------------------------


@pytest.mark.parametrize(
    ("T", "beta_1", "beta_T"),
    [(2, 0.1, 0.2), (10, 1e-3, 0.3), (STUDY_T, STUDY_BETA_1, STUDY_BETA_T)],
)
@pytest.mark.parametrize("name", BUFFERS)
def test_coefficients_match_closed_forms(T, beta_1, beta_T, name):
    schedule = NoiseSchedule(linear_betas(T, beta_1, beta_T))
    expected = closed_forms(python_betas(T, beta_1, beta_T))[name]
    actual = getattr(schedule, name)
    assert actual.dtype == torch.float32
    assert actual.shape == (T,)
    # float32 storage: relative error ~6e-8, so 1e-6 leaves room for a few roundings.
    torch.testing.assert_close(actual.double(), expected, rtol=1e-6, atol=1e-12)


def test_alpha_bars_prev_is_one_then_shifted(study_schedule):
    assert study_schedule.alpha_bars_prev[0].item() == 1.0
    torch.testing.assert_close(study_schedule.alpha_bars_prev[1:], study_schedule.alpha_bars[:-1])


def test_buffers_are_float32_non_persistent_and_follow_to(study_schedule):
    schedule = NoiseSchedule(linear_betas(10, 1e-3, 0.3))
    buffers = dict(schedule.named_buffers())
    assert set(buffers) == set(BUFFERS)
    assert all(b.dtype == torch.float32 for b in buffers.values())
    # Non-persistent: a checkpoint holds weights only, never the schedule.
    assert len(schedule.state_dict()) == 0
    assert len(study_schedule.state_dict()) == 0
    doubled = schedule.to(torch.float64)
    assert all(getattr(doubled, name).dtype == torch.float64 for name in BUFFERS)
    on_meta = NoiseSchedule(linear_betas(10, 1e-3, 0.3)).to("meta")
    assert all(getattr(on_meta, name).device.type == "meta" for name in BUFFERS)


@pytest.mark.parametrize("T", [2, 7, 500])
def test_T_property(T):
    assert NoiseSchedule(linear_betas(T, 1e-4, 0.02)).T == T


def test_posterior_variance_is_zero_at_first_index(study_schedule):
    # No noise is added at the last reverse step (t index 0):
    # beta~_1 = beta_1 (1 - 1) / (1 - abar_1) = 0.
    assert study_schedule.posterior_variance[0].item() == 0.0
    assert bool((study_schedule.posterior_variance[1:] > 0).all())
    # beta~_t <= beta_t always.
    assert bool((study_schedule.posterior_variance <= study_schedule.betas).all())


def test_study_schedule_destroys_the_signal(study_schedule):
    betas = python_betas(STUDY_T, STUDY_BETA_1, STUDY_BETA_T)
    final = study_schedule.alpha_bars[-1].item()
    assert final < 1e-3
    # prod(1 - b) = exp(sum log(1 - b)) ~ exp(-sum b): first order is ~7 % high for this schedule
    # (the second-order term exp(-sum b^2 / 2) = 0.936), so check both orders.
    first_order = math.exp(-sum(betas))
    assert final == pytest.approx(first_order, rel=0.08)
    second_order = math.exp(-sum(betas) - sum(b * b for b in betas) / 2)
    assert final == pytest.approx(second_order, rel=2e-3)


# --- forward process ------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 1, 100, 250, STUDY_T - 1])
def test_q_sample_statistics(study_schedule, t):
    n = 200_000
    generator = torch.Generator().manual_seed(1234 + t)
    x0 = torch.full((n, 1, 1, 1), 0.5)
    eps = torch.randn(x0.shape, generator=generator)
    xt = study_schedule.q_sample(x0, torch.full((n,), t, dtype=torch.long), eps).double().flatten()
    abar = study_schedule.alpha_bars[t].item()
    mean, var = math.sqrt(abar) * 0.5, 1.0 - abar
    std_err_mean = math.sqrt(var / n)
    std_err_var = var * math.sqrt(2.0 / n)
    assert abs(xt.mean().item() - mean) < 5 * std_err_mean
    assert abs(xt.var().item() - var) < 5 * std_err_var


def test_q_sample_uses_each_samples_own_t(study_schedule):
    x0 = torch.ones(3, 1, 2, 2)
    eps = torch.ones(3, 1, 2, 2)
    t = torch.tensor([0, 10, 499])
    xt = study_schedule.q_sample(x0, t, eps)
    for i, step in enumerate(t.tolist()):
        abar = study_schedule.alpha_bars[step].item()
        expected = math.sqrt(abar) + math.sqrt(1 - abar)
        torch.testing.assert_close(xt[i], torch.full((1, 2, 2), expected), rtol=1e-6, atol=1e-6)


def test_predict_x0_inverts_q_sample(study_schedule):
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 3, 4, 4, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, STUDY_T, (16,), generator=generator)
    t[0], t[1] = 0, STUDY_T - 1
    xt = study_schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(study_schedule.predict_x0(xt, t, eps), x0, rtol=0, atol=2e-5)


def test_posterior_mean_equals_eps_form(study_schedule):
    # With x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) and abar_t = abar_{t-1} alpha_t:
    #   coef_x0 / sqrt(abar_t) = beta_t sqrt(abar_{t-1}) / ((1 - abar_t) sqrt(abar_t))
    #                          = beta_t / ((1 - abar_t) sqrt(alpha_t)),
    #   so the coefficient of x_t is
    #     [beta_t + (1 - abar_{t-1}) alpha_t] / ((1 - abar_t) sqrt(alpha_t))
    #     = [1 - alpha_t + alpha_t - abar_t] / ((1 - abar_t) sqrt(alpha_t)) = 1 / sqrt(alpha_t),
    #   and that of eps is -beta_t sqrt(1 - abar_t) / ((1 - abar_t) sqrt(alpha_t))
    #                    = -beta_t / (sqrt(alpha_t) sqrt(1 - abar_t)).
    # Hence mu~(x_t, x0) = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps), DDPM eq. 11.
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand(32, 3, 4, 4, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, STUDY_T, (32,), generator=generator)
    t[0], t[1] = 0, STUDY_T - 1
    xt = study_schedule.q_sample(x0, t, eps)
    mean = study_schedule.posterior_mean(x0, xt, t)
    betas = python_betas(STUDY_T, STUDY_BETA_1, STUDY_BETA_T)
    abars = closed_forms(betas)["alpha_bars"].tolist()
    for i, step in enumerate(t.tolist()):
        beta, abar = betas[step], abars[step]
        expected = (xt[i].double() - beta / math.sqrt(1 - abar) * eps[i].double()) / math.sqrt(
            1 - beta
        )
        torch.testing.assert_close(mean[i].double(), expected, rtol=0, atol=1e-5)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "betas",
    [
        [0.0, 0.1, 0.2],
        [-1e-4, 0.1],
        [0.1, 1.0],
        [0.1, 1.5],
        [0.1, float("nan")],
    ],
)
def test_rejects_betas_outside_open_unit_interval(betas):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        NoiseSchedule(torch.tensor(betas, dtype=torch.float64))


@pytest.mark.parametrize("betas", [torch.tensor([0.1]), torch.tensor([]), torch.full((2, 3), 0.1)])
def test_rejects_short_or_non_vector_betas(betas):
    with pytest.raises(ValueError, match="length >= 2"):
        NoiseSchedule(betas)
