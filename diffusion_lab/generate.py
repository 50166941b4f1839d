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
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning_fabric import Fabric
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from diffusion_lab.cli import hydra_main, os_error_line, print_summary, write_json
from diffusion_lab.config import (
    is_int,
    is_number,
    require,
    require_gpu_if_asked,
    require_seed,
    sampler_nfe,
    validate_perf,
    validate_sampler,
)
from diffusion_lab.data.export import export_png
from diffusion_lab.data.generated import (
    LOCK_NAME,
    GeneratedSet,
    ShardSpec,
    finished_shards,
    layout_of,
    new_manifest,
    open_for_writing,
    read_generated_set,
    shard_seed,
    write_manifest,
    write_shard,
)
from diffusion_lab.errors import DataError, UserFacingError
from diffusion_lab.files import (
    check_folder_can_be_made,
    existing_ancestor,
    folder_lock,
    human_bytes,
    sha256_file,
)
from diffusion_lab.lit.run import NonFiniteSamples, TrainedRun
from diffusion_lab.nets.speed import use_tf32
from diffusion_lab.plotting import class_grid, class_grid_figure, save_figure
from diffusion_lab.progress import images_per_step, progress_bar

log = logging.getLogger(__name__)
MIXED_OR_FULL = ("32-true", "32", "bf16-mixed", "16-mixed")
# export=png also writes the set as <out>/png/<kk>_<class>/<iiiii>.png (data/export.py).
EXPORTS = (None, "png")
# What a shard file holds besides its pixels: torch.save's zip records and the pickle.
SHARD_OVERHEAD_BYTES = 4096
# A PNG's signature, header and end chunks; noisy pixels barely compress, so the data is ~raw.
PNG_OVERHEAD_BYTES = 128


def validate_generate_config(cfg: DictConfig) -> None:
    """Checks that need no checkpoint, cheapest first."""
    require(cfg.ckpt is not None, "ckpt", None, "pass the checkpoint to sample from: ckpt=PATH")
    for key in ("per_class", "shard_size", "batch_size", "contact_sheet_columns"):
        require(is_int(cfg[key]) and cfg[key] > 0, key, cfg[key], "must be a positive integer")
    require_seed(cfg.seed)
    require(is_number(cfg.w) and cfg.w >= 0, "w", cfg.w, "must be a number >= 0")
    require(cfg.export in EXPORTS, "export", cfg.export, "must be null or png")
    validate_perf(cfg)
    require_gpu_if_asked("fabric.accelerator", cfg.fabric.accelerator, "use cpu or auto")


def sampler_settings(cfg: DictConfig, T: int) -> dict[str, Any]:
    """What the manifest records of the sampler: name, steps, its other arguments and its
    network evaluations per image (nfe)."""
    sampler = OmegaConf.to_container(cfg.sampler, resolve=True)
    target = sampler.pop("_target_")
    sampler.pop("_partial_", None)
    sampler.pop("w", None)  # recorded once, as the manifest's top-level w
    steps = sampler.pop("steps", T)  # checked by validate_sampler
    name = target.rsplit(".", 1)[-1].removesuffix("_sample")
    return {"name": name, "steps": steps, **sampler, "nfe": sampler_nfe(cfg.sampler, T, cfg.w)}


def wanted_manifest(cfg: DictConfig, run: TrainedRun, precision: str) -> dict:
    """The manifest of the set this run makes, before any shard."""
    spec = run.spec
    return new_manifest(
        num_classes=spec.num_classes,
        img_size=spec.img_size,
        channels=spec.channels,
        class_names=list(spec.class_names) if spec.class_names else None,
        per_class=cfg.per_class,
        shard_size=cfg.shard_size,
        checkpoint_sha256=sha256_file(cfg.ckpt),
        checkpoint_path=str(Path(cfg.ckpt).resolve()),
        sampler=sampler_settings(cfg, run.module.schedule.T),
        w=cfg.w,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        precision=precision,
    )


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


def open_set(fabric: Fabric, root: Path, wanted: dict, export: str | None, held: ExitStack) -> dict:
    """Rank 0 checks the disk, takes the folder's lock (held until `held` closes) and creates or
    resumes the set; every rank gets its manifest (or the same error)."""
    manifest, error = None, None
    if fabric.is_global_zero:
        try:
            check_folder_can_be_made("out", root)
            check_free_space(root, wanted, export)
            held.enter_context(folder_lock(root, "out", LOCK_NAME))
            manifest = open_for_writing(root, wanted)
        except UserFacingError as err:
            error = str(err)
        except OSError as err:  # a folder that cannot be written: its one line, for every rank
            error = os_error_line(err)
            if error is None:
                raise
    # Broadcast the refusal too, so no rank waits forever at the next collective.
    manifest, error = fabric.broadcast((manifest, error), src=0)
    if error is not None:
        raise DataError(error)
    return manifest


def write_contact_sheet(gen: GeneratedSet, columns: int, path: Path) -> None:
    """The first `columns` images of every class, a labelled row per class."""
    manifest = gen.manifest
    per_class, columns = manifest["per_class"], min(columns, manifest["per_class"])
    starts = range(0, manifest["num_images"], per_class)
    images = torch.cat([gen.images[start : start + columns] for start in starts])
    names = manifest["class_names"] or [str(k) for k in range(manifest["num_classes"])]
    sampler = manifest["sampler"]
    title = f"{sampler['name']}, {sampler['steps']} steps, w={manifest['w']}"
    save_figure(class_grid_figure(class_grid(images, columns), names, title), path)


def finish_set(cfg: DictConfig, root: Path, manifest: dict, metrics: dict[str, Any]) -> None:
    """Rank 0, after all ranks: record every verified shard, check the whole set, then write the
    contact sheet, the PNG export and metrics.json."""
    manifest["shards"] = finished_shards(root, manifest)
    write_manifest(root, manifest)
    gen = read_generated_set(root)
    if cfg.contact_sheet:
        write_contact_sheet(gen, cfg.contact_sheet_columns, root / "contact_sheet.png")
    if cfg.export == "png":
        export_png(gen, root / "png", root)
        metrics["png"] = str(root / "png")
    metrics.update(num_images=len(gen.labels), out=str(root))
    write_json(metrics, Path(cfg.output_dir) / "metrics.json")
    result = (
        f"a set of {len(gen.labels)} images, {metrics['images_made']} made now "
        f"({metrics['images_per_s']:.2f} img/s)"
    )
    print_summary("generate", result, root)


def generate(cfg: DictConfig) -> dict[str, Any]:
    """Validate, load the checkpoint, make the missing shards, verify the set; returns metrics."""
    validate_generate_config(cfg)
    run = TrainedRun.load(cfg.ckpt)
    validate_sampler(cfg.sampler, run.module.schedule.T)
    precision = cfg.fabric.precision or run.config.get("trainer", {}).get("precision", "32-true")
    # Sampling keeps float32 noise and math; only the network's forward may run in autocast.
    allowed = "must be 32-true, bf16-mixed or 16-mixed (null: the checkpoint's precision)"
    require(str(precision) in MIXED_OR_FULL, "fabric.precision", precision, allowed)
    wanted = wanted_manifest(cfg, run, precision)
    use_tf32(cfg.perf.tf32)
    fabric = instantiate(cfg.fabric, precision=precision)
    fabric.launch()
    # Under torchrun every rank composes its own run folder name: use rank 0's.
    root = Path(fabric.broadcast(str(Path(cfg.out).absolute()), src=0))
    # Every check passes before the set folder or its manifest is touched.
    sampler = instantiate(cfg.sampler)
    with ExitStack() as held:
        manifest = open_set(fabric, root, wanted, cfg.export, held)
        perf = cfg.perf
        run.to(fabric.device).use_fast_paths(perf.compile, perf.compile_mode, perf.channels_last)
        start = time.perf_counter()
        made, steady = make_my_shards(fabric, run, sampler, manifest, root)
        made = int(fabric.all_reduce(torch.tensor(made, device=fabric.device), reduce_op="sum"))
        wall_time_s = time.perf_counter() - start
        fabric.barrier()
        metrics = {
            "images_made": made,
            "wall_time_s": wall_time_s,
            "images_per_s": made / wall_time_s,
        }
        if steady is not None:
            # Rank 0's rate after its first shard, times the ranks: the rate of a long run.
            metrics["steady_images_per_s"] = steady * fabric.world_size
        if fabric.is_global_zero:
            finish_set(cfg, root, manifest, metrics)
    return metrics


@hydra_main("generate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    generate(cfg)


if __name__ == "__main__":
    main()
