"""`python -m diffusion_lab.evaluate ckpt=PATH` (or set=PATH): sample-quality metrics.

Samples `per_class` images of every class from the checkpoint's EMA weights with the configured
sampler (or reads a set written by `generate`), extracts Inception features of them and of the
real reference split (cached once per data and weights), and writes FID, KID, per-class FID,
precision/recall, the memorisation check and label fidelity (the accuracy of the reference
classifier on the generated images, beside its accuracy on real test images) to metrics.json
and TensorBoard.

What it does: `diffusion_lab.jobs.evaluate`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from diffusion_lab.cli.entry_points import hydra_main
from diffusion_lab.jobs.evaluate import evaluate, validate_evaluate_run


@hydra_main("evaluate", check=validate_evaluate_run)
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
