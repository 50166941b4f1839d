"""Part 3 of the study: the cosine noise schedule against the linear one, and the beta grids.

Every Part 3 run trains exactly as many steps as Part 1 (the same budget per run), so the
cosine run and each grid value compare with Part 1 on equal terms. A grid value equal to
Part 1's setting reuses the Part 1 run. Runs that would not fit the stage's time are left out,
grids before the cosine run, and said so. Finished runs are kept when the study is rerun.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from diffusion_lab.config.source import config_files
from diffusion_lab.figures.grids import sweep_grid_figure
from diffusion_lab.figures.save import save_figure
from diffusion_lab.jobs.evaluate import evaluate
from diffusion_lab.reporting.training_sweep import loss_figure, sample_job
from diffusion_lab.stages import compose
from diffusion_lab.stages.context import StageContext
from diffusion_lab.stages.training import run_training, with_length


def grid_values(name: str) -> tuple[str, list[Any]]:
    """The key and values of the grid preset conf/experiment/part3_<name>.yaml."""
    preset = OmegaConf.load(config_files() / "experiment" / f"part3_{name}.yaml")
    ((key, values),) = preset.hydra.sweeper.params.items()
    parsed = OverridesParser.create().parse_override(f"{key}={values}")
    return key, list(parsed.sweep_iterator())


def planned_runs(cfg: Any) -> list[tuple[str, str | None]]:
    """(label, override) of every Part 3 run, in order; override None reuses Part 1's run."""
    runs: list[tuple[str, str | None]] = []
    if cfg.study.part3.schedule:
        runs.append(("schedule=cosine", "schedule=cosine"))
    for name in cfg.study.part3.grids:
        key, values = grid_values(name)
        for value in values:
            label = f"{key}={value}"
            runs.append((label, None if value == cfg[key] else label))
    return runs


def training_runs(cfg: Any) -> int:
    """How many runs share the training budget: Part 1 and every new Part 3 run."""
    if "part3" not in cfg.study.stages:
        return 1
    return 1 + sum(override is not None for _, override in planned_runs(cfg))


def run_estimate_s(ctx: StageContext, override: str) -> float:
    """A Part 3 run's time: Part 1's, scaled by pixels for another image size."""
    train = ctx.result("train")
    scale = 1.0
    if override.startswith("img_size="):
        scale = (int(override.split("=")[1]) / ctx.cfg.img_size) ** 2
    return train["wall_s"] * scale


def train_runs(ctx: StageContext) -> dict[str, str]:
    """Train every planned run that fits; {label: run folder} of those available."""
    part1 = ctx.result("train")
    folders: dict[str, str] = {}
    for label, override in planned_runs(ctx.cfg):
        if override is None:
            folders[label] = str(Path(part1["checkpoint"]).parents[1])
            continue
        run_dir = ctx.folder.path("part3", label.replace("/", "_"))
        if not (run_dir / "metrics.json").is_file():
            estimate = run_estimate_s(ctx, override)
            if not ctx.budget.fits("part3", estimate):
                left = ctx.budget.seconds_left("part3")
                ctx.note(f"part3: {label} left out (about {estimate:.0f} s; {left:.0f} s left)")
                continue
            cfg = compose.train_config(run_dir, [override])
            with_length(cfg, part1["steps"])
            # This stage draws each run's samples itself, all from the same noise.
            with open_dict(cfg):
                del cfg.callbacks["sample_grid"]
            run_training(cfg, run_dir)
        folders[label] = str(run_dir)
    return folders


def grid_figure(ctx: StageContext, labels: list[str], folders: dict[str, str], title: str) -> str:
    """Samples of each run from the same noise, one row per run; the figure's path."""
    per_class, seed = ctx.cfg.study.part3.grid_per_class, ctx.cfg.seed
    rows, names = [], ()
    for label in labels:
        ckpt = Path(folders[label]) / "checkpoints" / "last.ckpt"
        images, names, _ = sample_job(ckpt, per_class, seed, ctx.device)
        rows.append((label, images))
    path = ctx.folder.path("figures", f"part3_{title.split()[0]}_grid.png")
    save_figure(sweep_grid_figure(rows, names, f"{title}: same noise, seed {seed}"), path)
    return str(path.relative_to(ctx.folder.root))


def schedule_figures(ctx: StageContext, folders: dict[str, str]) -> dict[str, str]:
    """Loss curves and samples of the linear (Part 1) and cosine runs."""
    part1 = str(Path(ctx.result("train")["checkpoint"]).parents[1])
    runs = {"linear (Part 1)": part1, "cosine": folders["schedule=cosine"]}
    figure = loss_figure([Path(p) for p in runs.values()], list(runs), "linear vs cosine", "")
    loss = ctx.folder.path("figures", "part3_schedule_loss.png")
    save_figure(figure, loss)
    grid = grid_figure(ctx, list(runs), runs, "schedule linear vs cosine")
    return {"loss": str(loss.relative_to(ctx.folder.root)), "grid": grid}


def schedule_fid(ctx: StageContext, cosine_dir: str) -> dict[str, Any] | None:
    """FID of the linear and cosine runs at the same sample count (None: evaluate not run)."""
    generated, evaluated = ctx.result("generate"), ctx.result("evaluate")
    if generated is None or evaluated is None:
        ctx.note("part3: linear vs cosine FID left out (Part 2's generate/evaluate did not run)")
        return None
    classes = ctx.result("train")["num_classes"]
    per_class = min(ctx.cfg.study.part3.per_class, generated["per_class"])
    left = ctx.budget.seconds_left("part3")
    if left is not None:
        # Sampling the cosine run, then features of both sides (the reference is cached).
        each = classes / generated["images_per_s"] + 2 * classes / evaluated["features_per_s"]
        fitting = int(max(left, 0) // each)
        if fitting < 2:
            ctx.note(f"part3: linear vs cosine FID left out ({left:.0f} s left)")
            return None
        if fitting < per_class:
            ctx.note(f"part3: linear vs cosine FID at {fitting} images per class")
            per_class = fitting
    ckpt = Path(cosine_dir) / "checkpoints" / "last.ckpt"
    sources = {
        "linear": [f"set={compose.override_value(generated['set'])}", f"set_per_class={per_class}"],
        "cosine": [f"ckpt={compose.override_value(str(ckpt))}", f"per_class={per_class}"],
    }
    results = {}
    for name, source in sources.items():
        cfg = compose.evaluate_config(ctx.cfg, source, ctx.folder.path("part3", f"fid_{name}"))
        cfg.reference.per_class = evaluated["reference_per_class"]
        start = time.perf_counter()
        results[name] = {"metrics": evaluate(cfg), "wall_s": time.perf_counter() - start}
    return {"per_class": per_class, "runs": results}


def part3_stage(ctx: StageContext) -> dict[str, Any]:
    """Train the Part 3 runs, then their figures and the linear-vs-cosine FID."""
    folders = train_runs(ctx)
    figures: dict[str, Any] = {}
    fid = None
    with torch.no_grad():
        if "schedule=cosine" in folders:
            figures["schedule"] = schedule_figures(ctx, folders)
        for name in ctx.cfg.study.part3.grids:
            key, values = grid_values(name)
            labels = [f"{key}={v}" for v in values if f"{key}={v}" in folders]
            if len(labels) > 1:
                figures[name] = grid_figure(ctx, labels, folders, f"{key} grid")
    if "schedule=cosine" in folders:
        fid = schedule_fid(ctx, folders["schedule=cosine"])
    runs = {}
    for label, folder in folders.items():
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        runs[label] = {"folder": folder, "metrics": metrics}
    return {"runs": runs, "figures": figures, "fid": fid}
