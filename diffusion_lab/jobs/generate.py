"""What `python -m diffusion_lab.generate` does, callable in-process (the study runs it): check
the config and the checkpoint, open (or resume) the set under a lock, make the missing shards
(`diffusion_lab.jobs.generate_shards`) on every rank, verify the set, then write the contact
sheet, the PNG export and metrics.json."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning_fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from diffusion_lab.cli.entry_points import print_summary
from diffusion_lab.cli.user_errors import os_error_line
from diffusion_lab.config.checks import (
    is_int,
    is_number,
    require,
    require_gpu_if_asked,
    require_seed,
)
from diffusion_lab.config.sampler import sampler_nfe, validate_sampler
from diffusion_lab.config.trainer import validate_perf
from diffusion_lab.data.export import export_png
from diffusion_lab.data.generated import (
    LOCK_NAME,
    GeneratedSet,
    new_manifest,
    read_generated_set,
    write_manifest,
)
from diffusion_lab.data.generated_writer import finished_shards, open_for_writing
from diffusion_lab.figures.grids import class_grid, class_grid_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.jobs.generate_shards import check_free_space, make_my_shards
from diffusion_lab.nets.speed import use_tf32
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.utils.errors import DataError, UserFacingError
from diffusion_lab.utils.files import check_folder_can_be_made, folder_lock, sha256_file, write_json

log = logging.getLogger(__name__)


MIXED_OR_FULL = ("32-true", "32", "bf16-mixed", "16-mixed")


# export=png also writes the set as <out>/png/<kk>_<class>/<iiiii>.png (data/export.py).
EXPORTS = (None, "png")


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
