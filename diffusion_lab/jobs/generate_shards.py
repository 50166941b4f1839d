"""The shards of a generated set: each made from its own seeded generator by one rank and
written atomically, and the disk space the set will take, checked before any is written."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from tqdm.auto import tqdm

from diffusion_lab.data.generated import (
    ShardSpec,
    layout_of,
    shard_seed,
    write_manifest,
    write_shard,
)
from diffusion_lab.runs.trained_run import NonFiniteSamples, TrainedRun
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import existing_ancestor, human_bytes
from diffusion_lab.utils.progress import images_per_step, progress_bar

log = logging.getLogger(__name__)


# What a shard file holds besides its pixels: torch.save's zip records and the pickle.
SHARD_OVERHEAD_BYTES = 4096


# A PNG's signature, header and end chunks; noisy pixels barely compress, so the data is ~raw.
PNG_OVERHEAD_BYTES = 128


def make_shard(
    fabric: Fabric, run: TrainedRun, sampler: Any, spec: ShardSpec, manifest: dict, bar: tqdm
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (count, C, H, W) and labels of one shard, from its own generator."""
    generator = torch.Generator(fabric.device).manual_seed(shard_seed(manifest["seed"], spec.index))
    labels = spec.labels(manifest["per_class"]).to(fabric.device)
    images = []
    for part in labels.split(manifest["batch_size"]):
        try:
            with fabric.autocast():
                progress = images_per_step(bar, len(part))
                images.append(run.sample(part, generator, sampler, progress=progress).cpu())
        except NonFiniteSamples as err:
            raise NonFiniteSamples(
                f"shard {spec.file}: {err}; the shard was not written "
                "(try fabric.precision=32-true or another sampler)"
            ) from None
    return torch.cat(images), labels.cpu()


class SteadyRate:
    """Images per second after the first shard, which pays for compilation and autotuning."""

    def __init__(self) -> None:
        self.first_done: float | None = None
        self.images_after_first = 0

    def tick(self, images: int) -> None:
        """Count a finished shard (its images are on the host, so the GPU work is done)."""
        if self.first_done is None:
            self.first_done = time.perf_counter()
        else:
            self.images_after_first += images

    def images_per_s(self) -> float | None:
        if not self.images_after_first:
            return None
        return self.images_after_first / (time.perf_counter() - self.first_done)


def make_my_shards(
    fabric: Fabric, run: TrainedRun, sampler: Any, manifest: dict, root: Path
) -> tuple[int, float | None]:
    """Make and write this rank's unfinished shards; rank 0 records its own in the manifest.

    Returns the images made and this rank's rate after its first shard (None with one shard).
    """
    done = {entry["index"] for entry in manifest["shards"]}
    rank, world = fabric.global_rank, fabric.world_size
    mine = [s for s in layout_of(manifest) if s.index not in done and s.index % world == rank]
    total = sum(spec.count for spec in mine)
    desc = f"rank {rank}" if world > 1 else "generating"
    clock = SteadyRate()
    with progress_bar(total, desc, position=fabric.local_rank) as bar:
        for spec in mine:
            images, labels = make_shard(fabric, run, sampler, spec, manifest, bar)
            clock.tick(spec.count)
            entry = write_shard(root, spec, images, labels)
            if fabric.is_global_zero:
                manifest["shards"].append(entry)
                write_manifest(root, manifest)
    return total, clock.images_per_s()


def estimated_bytes(root: Path, manifest: dict, export: str | None) -> int:
    """Disk space the set (and its PNG export) will take beyond its shards already in `root`,
    about; arithmetic and one folder listing, so a set of millions of shards costs nothing."""
    image_bytes = manifest["channels"] * manifest["img_size"] ** 2
    shards = -(-manifest["num_images"] // manifest["shard_size"])
    # int64 labels beside the uint8 pixels.
    needed = manifest["num_images"] * (image_bytes + 8) + shards * SHARD_OVERHEAD_BYTES
    if root.is_dir():
        needed -= sum(path.stat().st_size for path in root.glob("shard_*.pt"))
    if export == "png":
        # Every small file takes at least one filesystem block.
        block = os.statvfs(existing_ancestor(root)).f_bsize
        png_blocks = -(-(image_bytes + PNG_OVERHEAD_BYTES) // block)
        needed += manifest["num_images"] * png_blocks * block
    return max(needed, 0)


def check_free_space(root: Path, manifest: dict, export: str | None) -> None:
    """DataError, before anything is written, when the set would not fit on out='s disk."""
    needed = estimated_bytes(root, manifest, export)
    free = shutil.disk_usage(existing_ancestor(root)).free
    if needed > free:
        raise DataError(
            f"out={root}: the set needs about {human_bytes(needed)} "
            f"({manifest['num_images']} images of {manifest['channels']}x{manifest['img_size']}"
            f"x{manifest['img_size']}) but only {human_bytes(free)} is free there; lower "
            f"per_class or pass an out= on a larger disk"
        )
    log.info("the set needs about %s; %s free", human_bytes(needed), human_bytes(free))
