"""Pure-torch diffusion math: schedules, forward process, loss, guidance and samplers."""

from diffusion_lab.diffusion.betas import (
    BETA_SCHEDULES,
    cosine_betas,
    linear_betas,
    quadratic_betas,
    sigmoid_betas,
)
from diffusion_lab.diffusion.dpm_solver import dpmpp_2m_sample
from diffusion_lab.diffusion.guidance import drop_labels, guidance_weight, guided_eps
from diffusion_lab.diffusion.losses import eps_mse
from diffusion_lab.diffusion.nfe import network_evaluations
from diffusion_lab.diffusion.samplers import ancestral_sample, ddim_sample
from diffusion_lab.diffusion.schedules import NoiseSchedule

__all__ = [
    "BETA_SCHEDULES",
    "NoiseSchedule",
    "ancestral_sample",
    "cosine_betas",
    "ddim_sample",
    "dpmpp_2m_sample",
    "drop_labels",
    "eps_mse",
    "guidance_weight",
    "guided_eps",
    "linear_betas",
    "network_evaluations",
    "quadratic_betas",
    "sigmoid_betas",
]
