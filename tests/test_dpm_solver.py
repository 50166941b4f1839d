"""DPM-Solver++(2M): its order on Gaussian data, where the optimal eps and the probability-flow
ODE's solution are known in closed form, and step-by-step agreement with diffusers'
DPMSolverMultistepScheduler (same schedule, same model outputs)."""

from __future__ import annotations

import itertools

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from torch import Tensor, nn

from diffusion_lab.diffusion import NoiseSchedule, ddim_sample, dpmpp_2m_sample, linear_betas
from diffusion_lab.diffusion.dpm_solver import DPM_SPACINGS, dpm_timesteps

# diffusers' set_timesteps trips numpy 2's __array__ copy deprecation on every call.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")
NULL = 10
# Gaussian data x0 ~ N(mu_y, S^2 I) per label y; the null label's is N(0, S^2 I).
S = 0.5


def mu(labels: Tensor) -> Tensor:
    """mu_y = -0.5 + 0.1 y (0 for the null label), shaped to broadcast over images."""
    means = torch.where(labels == NULL, 0.0, -0.5 + 0.1 * labels.double())
    return means[:, None, None, None]


class GaussianEps(nn.Module):
    """The optimal eps-predictor for Gaussian data: E[eps | x_t] =
    sqrt(1 - ab)(x_t - sqrt(ab) mu) / (ab S^2 + 1 - ab), ab = alpha_bar_t. Records its inputs."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.alpha_bars = schedule.alpha_bars.double()
        self.inputs: list[tuple[Tensor, int]] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.inputs.append((x.clone(), int(t[0])))
        ab = self.alpha_bars[t][:, None, None, None]
        return ((1 - ab).sqrt() * (x - ab.sqrt() * mu(y)) / (ab * S**2 + 1 - ab)).to(x.dtype)


def exact_flow(schedule: NoiseSchedule, x: Tensor, t0: int, t1: int | None, y: Tensor) -> Tensor:
    """The probability-flow ODE from x at index t0 to index t1 (None: clean data). Along it the
    standardised value (x - alpha mu) / sqrt(alpha^2 S^2 + sigma^2) stays constant."""
    ab = schedule.alpha_bars.double()
    z = (x - ab[t0].sqrt() * mu(y)) / (ab[t0] * S**2 + 1 - ab[t0]).sqrt()
    if t1 is None:
        return mu(y) + S * z
    return ab[t1].sqrt() * mu(y) + (ab[t1] * S**2 + 1 - ab[t1]).sqrt() * z


def log_snr_linear_betas(T: int, lambda_max: float = 5.0, lambda_min: float = -5.0) -> Tensor:
    """Betas whose half log-SNR lambda_t falls linearly from lambda_max (t=0) to lambda_min."""
    alpha_bars = torch.sigmoid(2 * torch.linspace(lambda_max, lambda_min, T, dtype=torch.float64))
    return 1 - alpha_bars / torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])


def error_at_last_input(sampler, schedule: NoiseSchedule, steps: int) -> float:
    """Max |x - exact| at the last index where the sampler evaluates the network (float64)."""
    net = GaussianEps(schedule)
    labels = torch.arange(8) % 10
    x_T = torch.randn(8, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sampler(net, schedule, x_T, labels, w=0.0, null_label=NULL, steps=steps, clip_x0=False)
    (_, t0), (x, t_last) = net.inputs[0], net.inputs[-1]
    return (x - exact_flow(schedule, x_T, t0, t_last, labels)).abs().max().item()


def ratios(errors: list[float]) -> list[float]:
    return [a / b for a, b in itertools.pairwise(errors)]


# T - 1 = 1280 is divisible by every step count, so the linspace indices are exactly uniform in t,
# and with lambda linear in t, uniform in lambda: the steps h shrink as 1 / steps. (On the linear
# betas, lambda ~ -log t near t = 0: the last steps keep h ~ 0.7 however many there are, and the
# ratios there wander between 1 and 3.)
ORDER_T = 1281
ORDER_STEPS = [32, 64, 128, 256]


def test_dpm_solver_pp_2m_converges_with_order_two():
    schedule = NoiseSchedule(log_snr_linear_betas(ORDER_T))
    errors = [error_at_last_input(dpmpp_2m_sample, schedule, n) for n in ORDER_STEPS]
    # Measured: 3.89, 3.98, 3.99.
    assert all(3.7 <= r <= 4.3 for r in ratios(errors)), (errors, ratios(errors))


def test_ddim_converges_with_order_one_on_the_same_problem():
    schedule = NoiseSchedule(log_snr_linear_betas(ORDER_T))
    errors = [error_at_last_input(ddim_sample, schedule, n) for n in ORDER_STEPS]
    # Measured: 1.99, 2.00, 2.00.
    assert all(1.85 <= r <= 2.15 for r in ratios(errors)), (errors, ratios(errors))


def final_error(sampler, schedule: NoiseSchedule, steps: int) -> float:
    """Max |x_0 - exact clean data| of the sampler's output (float64)."""
    net = GaussianEps(schedule)
    labels = torch.arange(8) % 10
    x_T = torch.randn(8, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = sampler(net, schedule, x_T, labels, w=0.0, null_label=NULL, steps=steps, clip_x0=False)
    return (out - exact_flow(schedule, x_T, net.inputs[0][1], None, labels)).abs().max().item()


def test_on_the_studys_schedule_n_steps_beat_ddim_with_twice_as_many():
    """Linear betas 1e-4..0.028 at T=500: the sample itself (after the jump to sigma = 0)."""
    schedule = NoiseSchedule(linear_betas(500, 1e-4, 0.028))
    for n in (20, 40, 80):
        dpm, ddim = (
            final_error(dpmpp_2m_sample, schedule, n),
            final_error(ddim_sample, schedule, 2 * n),
        )
        assert dpm < ddim / 2, (n, dpm, ddim)
    assert final_error(dpmpp_2m_sample, schedule, 160) < 1e-3


# --- timesteps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [("linspace", [9, 6, 3]), ("leading", [6, 4, 2]), ("trailing", [9, 6, 2])],
)
def test_spacings_of_ten_indices_in_three_steps(spacing, expected):
    assert dpm_timesteps(10, 3, spacing) == expected


@pytest.mark.parametrize("T", [20, 500, 1000])
@pytest.mark.parametrize("spacing", DPM_SPACINGS)
def test_timesteps_are_diffusers_for_every_step_count(T, spacing):
    """Every step count our spacing allows; diffusers' trailing sometimes yields one index more
    (a trailing -1), which we leave out."""
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    allowed = 0
    for steps in range(1, T + 1):
        scheduler.set_timesteps(steps)
        theirs = scheduler.timesteps.tolist()
        try:
            ours = dpm_timesteps(T, steps, spacing)
        except ValueError:
            assert len(set(theirs)) < steps  # refused only where diffusers repeats an index
            continue
        allowed += 1
        assert len(ours) == steps
        assert ours == theirs[:steps]
        assert all(t >= 0 for t in theirs[:steps])
    assert allowed == (T if spacing == "trailing" else T - 1)


# A spacing that repeats an index, or an unknown one: rows of tests/test_bad_inputs.py.
def test_zero_steps_are_refused():
    with pytest.raises(ValueError, match="steps=0: DPM-Solver\\+\\+ needs 1 <= steps <= T=20"):
        dpm_timesteps(20, 0)


# --- agreement with diffusers ----------------------------------------------------------------

# The study's schedule (conf/train.yaml), and its betas at another T. Float32 x0 = (x - sigma
# eps) / alpha carries rounding / alpha_t: at DDPM's T=1000 (1e-4..0.02, alpha_999 = 6e-3) the
# two implementations' roundings alone differ by 1.1e-5 in x and 3.8e-5 in a one-step sample.
SCHEDULES = [(500, 1e-4, 0.028), (200, 1e-4, 0.028)]


@pytest.mark.parametrize(("T", "beta_1", "beta_T"), SCHEDULES)
def test_our_linear_betas_are_diffusers_linear_schedule(T, beta_1, beta_T):
    ours = NoiseSchedule(linear_betas(T, beta_1, beta_T))
    theirs = DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_start=beta_1, beta_end=beta_T, beta_schedule="linear"
    )
    # One float32 rounding apart (diffusers takes linspace in float32, we in float64).
    torch.testing.assert_close(theirs.betas, ours.betas, rtol=2**-23, atol=0)
    # Their float32 cumprod drifts from our float64 one by up to 4e-7 (relative).
    torch.testing.assert_close(theirs.alphas_cumprod, ours.alpha_bars, rtol=1e-6, atol=0)


def diffusers_trajectory(
    T: int, beta_1: float, beta_T: float, spacing: str, steps: int, eps_of, x_T: Tensor
) -> list[Tensor]:
    """x_T and every x the scheduler steps to, with eps_of(x, t) as the model output."""
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=T,
        beta_start=beta_1,
        beta_end=beta_T,
        beta_schedule="linear",
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing=spacing,
    )
    scheduler.set_timesteps(steps)
    xs = [x_T]
    for t in scheduler.timesteps:
        xs.append(scheduler.step(eps_of(xs[-1], int(t)), t, xs[-1]).prev_sample)
    return xs


@pytest.mark.parametrize(("T", "beta_1", "beta_T"), SCHEDULES)
@pytest.mark.parametrize("spacing", DPM_SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 20, 50])
def test_every_step_agrees_with_diffusers(T, beta_1, beta_T, spacing, steps):
    """Guided (w = 1.8), unclipped, float32 as the sampler runs: every x the network sees and
    the sample agree to 1e-5 (measured: at most 3.3e-6 at T=500, 2.4e-6 at T=200)."""
    schedule = NoiseSchedule(linear_betas(T, beta_1, beta_T))
    net = GaussianEps(schedule)
    labels, w, batch = torch.arange(4), 1.8, 4
    x_T = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sample = dpmpp_2m_sample(
        net,
        schedule,
        x_T,
        labels,
        w=w,
        null_label=NULL,
        steps=steps,
        spacing=spacing,
        clip_x0=False,
    )
    ours = [x[:batch] for x, _ in net.inputs] + [sample]

    def eps_of(x: Tensor, t: int) -> Tensor:
        t_batch, null = torch.full((batch,), t), torch.full((batch,), NULL)
        return (1 + w) * net(x, t_batch, labels) - w * net(x, t_batch, null)

    theirs = diffusers_trajectory(T, beta_1, beta_T, spacing, steps, eps_of, x_T)
    assert len(ours) == len(theirs) == steps + 1
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert (a - b).abs().max().item() <= 1e-5, f"step {step}"
