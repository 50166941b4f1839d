"""Network evaluations per image (NFE) of each sampler: the cost axis of a quality-per-step curve.

A guided step runs the network on the conditional and the unconditional input (2 evaluations),
an unguided one (w = 0, or outside the guidance interval) on the conditional input only (1).
"""

from __future__ import annotations

from collections.abc import Sequence

from diffusion_lab.diffusion.dpm_solver import dpm_timesteps
from diffusion_lab.diffusion.guidance import guidance_weight
from diffusion_lab.diffusion.samplers import ddim_timesteps

# The samplers by the name of their `conf/sampler/<name>.yaml` (`<name>_sample` in diffusion/).
SAMPLER_NAMES = ("ancestral", "ddim", "dpmpp_2m")


def sampler_timesteps(name: str, T: int, **settings) -> list[int]:
    """The indices where sampler `name` evaluates the network, in order; `settings` are its
    `steps` and `spacing` (each sampler's own default where left out; ancestral has neither)."""
    if name == "ancestral":
        return list(range(T - 1, -1, -1))
    if name == "ddim":
        return ddim_timesteps(T, **settings)
    if name == "dpmpp_2m":
        return dpm_timesteps(T, **settings)
    raise ValueError(f"sampler={name!r}: expected one of {', '.join(SAMPLER_NAMES)}")


def network_evaluations(
    name: str, T: int, w: float, guidance_interval: Sequence[int] | None = None, **settings
) -> int:
    """Forward passes per image of sampler `name` with guidance weight w: 2 at each visited
    index inside the guidance interval (when w != 0), 1 at every other."""
    return sum(
        1 + (guidance_weight(t, w, guidance_interval) != 0)
        for t in sampler_timesteps(name, T, **settings)
    )
