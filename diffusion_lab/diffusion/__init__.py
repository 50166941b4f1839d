"""Pure-torch diffusion math: schedules, forward process, loss, guidance and samplers."""

from diffusion_lab.diffusion.guidance import drop_labels, guided_eps
from diffusion_lab.diffusion.losses import eps_mse
from diffusion_lab.diffusion.samplers import ancestral_sample, ddim_sample
from diffusion_lab.diffusion.schedules import NoiseSchedule, linear_betas

__all__ = [
    "NoiseSchedule",
    "ancestral_sample",
    "ddim_sample",
    "drop_labels",
    "eps_mse",
    "guided_eps",
    "linear_betas",
]
