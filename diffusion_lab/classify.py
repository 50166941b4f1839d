"""`python -m diffusion_lab.classify`: train a classifier on real and/or generated images.

    python -m diffusion_lab.classify                               # strong MLP, real CIFAR-10
    python -m diffusion_lab.classify model=mlp_seed                # the study's recipe
    python -m diffusion_lab.classify synthetic=PATH                # real + generated
    python -m diffusion_lab.classify synthetic=PATH mode=synthetic # generated only (CAS)
    python -m diffusion_lab.classify synthetic=PATH modes=[real,augmented,synthetic] seeds=[1,2,3]

Fits on the training set of the mode, validates on the real validation split every epoch and
evaluates the real test split once, at the end. With `modes` or `seeds` set, every mode x seed
pair trains as one batched model instead (`diffusion_lab.jobs.ensemble`).

What it does: `diffusion_lab.jobs.classify`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from diffusion_lab.cli.entry_points import hydra_main
from diffusion_lab.jobs.classify import classify, validate_classify_run


@hydra_main("classify", check=validate_classify_run)
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the test accuracy for sweepers that optimise it."""
    return classify(cfg).get("test/acc")  # None for the batched stage: one per member


if __name__ == "__main__":
    main()
