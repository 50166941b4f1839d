"""`python -m diffusion_lab.study`: the whole study (Parts 1-3) in one folder, with study.md.

    python -m diffusion_lab.study                                        # the full recipe
    python -m diffusion_lab.study experiment=quickstart budget_minutes=6 # the digits, 6 minutes

Stages and budget: `diffusion_lab.stages` (pipeline.py, budget.py) and conf/study.yaml.
"""

from __future__ import annotations

import time

# The budget counts from here, before the heavy imports.
STARTED = time.time()

from omegaconf import DictConfig  # noqa: E402

from diffusion_lab.cli.entry_points import hydra_main, print_summary  # noqa: E402
from diffusion_lab.stages.pipeline import run_study  # noqa: E402


@hydra_main("study")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    report = run_study(cfg, STARTED)
    print_summary("study", f"{time.time() - STARTED:.0f} s", report)


if __name__ == "__main__":
    main()
