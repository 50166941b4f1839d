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
from diffusion_lab.stages.checks import validate_study_config  # noqa: E402
from diffusion_lab.stages.pipeline import run_study  # noqa: E402

# What the imports cost; each run's budget counts it once, also a run after the first in one
# process (tests call main() in-process).
IMPORT_S = time.time() - STARTED


@hydra_main("study", check=validate_study_config)
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    started = time.time() - IMPORT_S
    report = run_study(cfg, started)
    print_summary("study", f"{time.time() - started:.0f} s", report)


if __name__ == "__main__":
    main()
