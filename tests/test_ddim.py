"""DDIM: timestep spacing, determinism at eta=0, agreement with the ancestral sampler at eta=1."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from diffusion_lab.diffusion import NoiseSchedule, ancestral_sample, ddim_sample, linear_betas
from diffusion_lab.diffusion.samplers import ddim_timesteps
from tests.test_guidance_and_sampling import NULL, NUM_CLASSES, CountingNet, OracleNet, ToyNet


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule(linear_betas(20, 1e-3, 0.2))


def _ddim(net, schedule, x_T, generator=None, **kwargs):
    labels = torch.arange(x_T.shape[0]) % NUM_CLASSES
    kwargs = {"w": 1.8, "steps": 5, **kwargs}
    return ddim_sample(net, schedule, x_T, labels, generator, null_label=NULL, **kwargs)


@pytest.mark.parametrize(
    ("T", "steps", "expected"),
    [(10, 4, [9, 6, 3, 0]), (10, 10, list(range(9, -1, -1))), (10, 1, [9]), (500, 2, [499, 0])],
)
def test_uniform_spacing_visits_T_minus_1_first_and_ends_at_0(T, steps, expected):
    assert ddim_timesteps(T, steps) == expected


@pytest.mark.parametrize(("T", "steps"), [(500, 50), (20, 20), (20, 7), (1000, 999)])
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_spacings_give_steps_distinct_descending_indices(T, steps, spacing):
    visited = ddim_timesteps(T, steps, spacing)
    assert len(visited) == steps
    assert visited[0] == T - 1 and visited[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(visited))


def test_quadratic_spacing_is_denser_near_zero():
    visited = ddim_timesteps(500, 50, "quadratic")
    assert visited[-2] < 500 / 49 < visited[0] - visited[1]


@pytest.mark.parametrize("steps", [0, -3, 21])
def test_steps_outside_1_to_T_is_a_clear_error(schedule, steps):
    with pytest.raises(ValueError, match=f"steps={steps}: DDIM needs 1 <= steps <= T=20"):
        _ddim(ToyNet(), schedule, torch.randn(1, 3, 8, 8), steps=steps)


# An unknown spacing is a row of tests/test_bad_inputs.py.
def test_negative_eta_is_refused(schedule):
    with pytest.raises(ValueError, match=re.escape("eta=-0.5: must be >= 0")):
        _ddim(ToyNet(), schedule, torch.randn(1, 3, 8, 8), eta=-0.5)


def test_eta_zero_is_deterministic_for_fixed_noise(schedule):
    """Two calls with generators in different states give the same images: nothing is drawn."""
    net = ToyNet().eval()
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = _ddim(net, schedule, x_T, torch.Generator().manual_seed(1), eta=0.0)
    b = _ddim(net, schedule, x_T, torch.Generator().manual_seed(2), eta=0.0)
    c = _ddim(net, schedule, x_T, None, eta=0.0)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, _ddim(net, schedule, x_T * 0.5, eta=0.0))


def test_one_guided_forward_per_visited_step_and_progress_sees_them(schedule):
    seen = []

    def progress(steps):
        seen.extend(steps)
        return seen

    net = CountingNet(ToyNet())
    _ddim(net, schedule, torch.randn(3, 3, 8, 8), steps=4, progress=progress)
    assert seen == [19, 13, 6, 0]
    assert net.batch_sizes == [6] * 4


@pytest.mark.parametrize("clip_x0", [True, False])
@pytest.mark.parametrize("w", [0.0, 1.8])
def test_all_steps_eta_one_equals_the_ancestral_sampler(schedule, clip_x0, w):
    """DDIM with steps=T, eta=1 takes the ancestral step, so equal noise gives equal images.

    With a = alpha_bar, the DDIM step (eq. 12) from t to t-1 is
        x_{t-1} = sqrt(a_{t-1}) x0_hat + sqrt(1 - a_{t-1} - sigma_t^2) eps_hat + sigma_t z,
    eps_hat = (x_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t), sigma_t(eta)^2 (eq. 16)
        = eta^2 (1 - a_{t-1}) / (1 - a_t) (1 - a_t / a_{t-1}).
    With eta = 1 and a_t / a_{t-1} = 1 - beta_t, sigma_t^2 = beta_t (1 - a_{t-1}) / (1 - a_t),
    the posterior variance beta~_t (DDPM eq. 7), which ancestral_sample uses ("fixed_small").
    Then 1 - a_{t-1} - beta~_t = (1 - a_{t-1}) (1 - a_t - beta_t) / (1 - a_t)
    = (1 - beta_t) (1 - a_{t-1})^2 / (1 - a_t), as a_t = (1 - beta_t) a_{t-1}; so the mean is
        [sqrt(a_{t-1}) - sqrt(a_t) sqrt(1 - beta_t) (1 - a_{t-1}) / (1 - a_t)] x0_hat
        + sqrt(1 - beta_t) (1 - a_{t-1}) / (1 - a_t) x_t,
    where the x0 coefficient simplifies to sqrt(a_{t-1}) beta_t / (1 - a_t): the posterior mean
    mu~(x0_hat, x_t) of DDPM eq. 7. At t = 0 both return x0_hat with no noise, and both draw
    one N(0, I) tensor per step t > 0 from the generator, in the same order. The same holds for
    a clipped x0_hat because DDIM recomputes eps_hat from it.
    """
    net = ToyNet().eval()
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4) % NUM_CLASSES
    ddim = ddim_sample(
        net,
        schedule,
        x_T,
        labels,
        torch.Generator().manual_seed(5),
        w=w,
        null_label=NULL,
        steps=schedule.T,
        eta=1.0,
        clip_x0=clip_x0,
    )
    ancestral = ancestral_sample(
        net,
        schedule,
        x_T,
        labels,
        torch.Generator().manual_seed(5),
        w=w,
        null_label=NULL,
        variance="fixed_small",
        clip_x0=clip_x0,
    )
    torch.testing.assert_close(ddim, ancestral, rtol=0, atol=2e-5)


@pytest.mark.parametrize("steps", [1, 5, 50])
def test_oracle_network_recovers_x0_in_any_number_of_steps(steps):
    schedule = NoiseSchedule(linear_betas(500, 1e-4, 0.028))
    generator = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 3, 8, 8, generator=generator) * 1.8 - 0.9
    x_T = torch.randn(x0.shape, generator=generator)
    out = _ddim(OracleNet(schedule, x0), schedule, x_T, steps=steps, eta=0.0)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)
