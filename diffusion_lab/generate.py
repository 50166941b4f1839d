"""`python -m diffusion_lab.generate ckpt=PATH per_class=5000`: write a generated set.

The set (shards + manifest.json, see `diffusion_lab.data.generated`) is made with the
checkpoint's EMA weights. Shard k's noise comes from a generator seeded by (seed, k) only and
shard k is made by rank k % world_size, so the set does not depend on the number of processes.
Every rank writes its own shards atomically; rank 0 owns the manifest: it records its own
shards as they finish and, after a barrier, every verified shard. A killed run leaves finished
shards and a manifest; rerunning with the same out= adopts them and makes only the rest.
Before anything is written, every setting is checked and the set's size is compared with the
free disk space; rank 0 then holds a lock on out= (`.lock`, holding its pid) until the set is
verified, so a second run on the same folder is refused with one line.

What it does: `diffusion_lab.jobs.generate`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from diffusion_lab.cli.entry_points import hydra_main
from diffusion_lab.jobs.generate import generate, validate_generate_config


@hydra_main("generate", check=validate_generate_config)
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    generate(cfg)


if __name__ == "__main__":
    main()
