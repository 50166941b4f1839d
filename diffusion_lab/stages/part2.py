"""Part 2 of the study, and the quality of Part 1's samples: generate, evaluate, classify.

Each stage estimates its cost from a short measurement, shrinks what does not fit its share of
the budget (and says so), then runs the command's own function on the composed config.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from diffusion_lab.config.sampler import sampler_nfe
from diffusion_lab.jobs.ensemble import classify_ensemble
from diffusion_lab.jobs.evaluate import evaluate
from diffusion_lab.jobs.generate import generate
from diffusion_lab.stages import compose
from diffusion_lab.stages.budget import largest_fitting
from diffusion_lab.stages.context import StageContext
from diffusion_lab.stages.estimates import (
    ensemble_epoch_seconds,
    feature_images_per_s,
    network_evals_per_s,
)

# Model loading, compilation and writing, on top of the measured rates.
GENERATE_OVERHEAD_S = 10.0
EVALUATE_OVERHEAD_S = 10.0
CLASSIFY_OVERHEAD_S = 10.0
# Validation every epoch and the test at the end, on top of the timed training steps.
CLASSIFY_MARGIN = 1.15


class PartSkipped(Exception):
    """The budget left no room for this stage; its note says why."""


def images_per_s_of(ctx: StageContext, sampler: DictConfig, T: int, ckpt: str) -> float:
    """Generated images per second here: network passes per second over passes per image."""
    evals = sampler_nfe(sampler, T, ctx.cfg.w)
    batch = min(ctx.cfg.study.generate.batch_size, 256)
    return network_evals_per_s(ckpt, batch, ctx.device) / evals


def generate_stage(ctx: StageContext) -> dict[str, Any]:
    """The Part 2 set: `study.generate.per_class` images of every class, or what fits."""
    cfg, settings = ctx.cfg, ctx.cfg.study.generate
    train = ctx.result("train")
    ckpt = train["checkpoint"]
    per_class = settings.per_class
    out = ctx.folder.path("generated")
    seconds = ctx.budget.seconds_left("generate")
    if seconds is not None:
        rate = images_per_s_of(ctx, cfg.sampler, cfg.T, ckpt)
        classes = train["num_classes"]
        fitting = largest_fitting(per_class, classes / rate, seconds - GENERATE_OVERHEAD_S, least=0)
        if fitting < settings.min_per_class:
            ctx.note(
                f"generate: left out with Part 2 (evaluate, classify): {seconds:.0f} s left "
                f"make about {max(seconds, 0) * rate / classes:.0f} images per class at "
                f"{rate:.0f} img/s, fewer than study.generate.min_per_class="
                f"{settings.min_per_class}"
            )
            raise PartSkipped
        if fitting < per_class:
            ctx.note(
                f"generate: {fitting} images per class instead of {per_class} (the budget "
                f"leaves {seconds:.0f} s at an estimated {rate:.0f} img/s)"
            )
            per_class = fitting
    metrics = generate(compose.generate_config(cfg, Path(ckpt), out, per_class))
    return {
        "set": str(out),
        "per_class": per_class,
        "images": metrics["num_images"],
        "images_per_s": metrics.get("steady_images_per_s", metrics["images_per_s"]),
        "metrics": metrics,
    }


def evaluate_counts(ctx: StageContext, source_per_class: int, classes: int) -> tuple[int, int]:
    """(generated, reference) images per class that fit the evaluate stage's time."""
    settings = ctx.cfg.study.evaluate
    wanted = settings.per_class or source_per_class
    reference = settings.reference_per_class
    seconds = ctx.budget.seconds_left("evaluate")
    if seconds is None:
        return wanted, reference
    probe_cfg = compose.evaluate_config(ctx.cfg, ["ckpt=probe"], ctx.folder.path("evaluate"))
    rate = feature_images_per_s(probe_cfg)
    real = ctx.result("train")["train_images"] if reference is None else reference * classes
    if (wanted * classes + real) / rate + EVALUATE_OVERHEAD_S <= seconds:
        return wanted, reference
    # Both sides shrink to the same count per class: FID is compared at equal sample counts.
    each = largest_fitting(wanted, 2 * classes / rate, seconds - EVALUATE_OVERHEAD_S, least=2)
    ctx.note(
        f"evaluate: {each} generated and {each} real images per class (of {wanted} and "
        f"{'all' if reference is None else reference}); features at an estimated "
        f"{rate:.1f} img/s do not fit the {seconds:.0f} s left"
    )
    return each, each


def evaluate_stage(ctx: StageContext) -> dict[str, Any]:
    """FID, KID, precision/recall, label fidelity and per-class FID of the Part 2 set."""
    generated = ctx.result("generate")
    classes = ctx.result("train")["num_classes"]
    per_class, reference = evaluate_counts(ctx, generated["per_class"], classes)
    out = ctx.folder.path("evaluate")
    source = [f"set={compose.override_value(generated['set'])}", f"set_per_class={per_class}"]
    cfg = compose.evaluate_config(ctx.cfg, source, out)
    cfg.reference.per_class = reference
    start = time.perf_counter()
    metrics = evaluate(cfg)
    wall_s = time.perf_counter() - start
    protocol = json.loads((out / "metrics.json").read_text())["protocol"]
    images = protocol["num_generated"] + protocol["num_reference"]
    return {
        "metrics": metrics,
        "protocol": protocol,
        "reference_per_class": reference,
        "wall_s": wall_s,
        "features_per_s": images / wall_s,
    }


def classify_epochs(ctx: StageContext, cfg: DictConfig, recipe: str, share_s: float | None) -> int:
    """The recipe's epochs, or as many as fit `share_s` (0: none fit)."""
    if share_s is None:
        return cfg.epochs
    epoch_s = CLASSIFY_MARGIN * ensemble_epoch_seconds(cfg, ctx.device)
    epochs = min(cfg.epochs, int(max(share_s - CLASSIFY_OVERHEAD_S, 0) // epoch_s))
    cost = f"about {epoch_s:.1f} s per epoch here; {share_s:.0f} s for it"
    if epochs == 0:
        ctx.note(f"classify: recipe {recipe} left out (not one epoch fits: {cost})")
    elif epochs < cfg.epochs:
        ctx.note(f"classify: recipe {recipe} for {epochs} epochs instead of {cfg.epochs} ({cost})")
    return epochs


def classify_stage(ctx: StageContext) -> dict[str, Any]:
    """Every mode and seed of every recipe, one batched run per recipe; the recipes share the
    stage's time equally, each shrinking its epochs to fit its share or left out."""
    generated = ctx.result("generate")
    recipes: dict[str, Any] = {}
    names = list(ctx.cfg.study.classify.recipes)
    for i, recipe in enumerate(names):
        out = ctx.folder.path("classify", recipe)
        cfg = compose.classify_config(ctx.cfg, recipe, Path(generated["set"]), out)
        left = ctx.budget.seconds_left("classify")
        share = None if left is None else left / (len(names) - i)
        epochs = classify_epochs(ctx, cfg, recipe, share)
        if epochs == 0:
            continue
        cfg.epochs = epochs
        start = time.perf_counter()
        metrics = classify_ensemble(cfg)
        recipes[recipe] = {
            "metrics": metrics,
            "wall_s": time.perf_counter() - start,
            "output_dir": str(out),
        }
    return {"recipes": recipes}
