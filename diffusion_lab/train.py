"""`python -m diffusion_lab.train`: train a class-conditional DDPM (defaults: study Part 1).

What it does: `diffusion_lab.jobs.train`.
"""

from __future__ import annotations

from omegaconf import DictConfig
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from diffusion_lab.cli.entry_points import hydra_main
from diffusion_lab.jobs.train import objective, train, validate_objective, validate_train_run


@hydra_main("train", check=validate_train_run)
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns `optimized_metric` (default val/loss) for sweepers."""
    validate_objective(cfg)
    metrics = train(cfg)
    # Only global rank 0 logs every metric (a FID during training is measured there alone).
    return objective(metrics, cfg.optimized_metric) if rank_zero_only.rank == 0 else None


if __name__ == "__main__":
    main()
