"""`study.md`: the study's report rebuilt from the records of its stages, with its figures.

It puts the study's own numbers (Part 2: 44.05 % real, 41.14 % augmented, one run each) beside
ours (mean ± std over seeds), gives every quality number with its protocol, and says what ran
where, for how long and what the budget shrank or left out.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch

from diffusion_lab.reporting.sweeps import mean_std
from diffusion_lab.stages.budget import STAGE_ORDER
from diffusion_lab.stages.compose import task_overrides
from diffusion_lab.stages.context import StageContext, log
from diffusion_lab.utils.files import atomic_path

# The study's Part 2 result (MLP test accuracy on CIFAR-10, one run each).
STUDY_ACCURACY = {"real": 44.05, "augmented": 41.14}
STUDY_RECIPE = "mlp_seed"
QUALITY_ROWS = (
    ("FID", "quality/fid", "{:.2f}"),
    ("KID", "quality/kid", "{:.4f}"),
    ("precision (k=3)", "quality/precision", "{:.3f}"),
    ("recall (k=3)", "quality/recall", "{:.3f}"),
    ("label fidelity", "quality/label_fidelity", "{:.2%}"),
    ("label fidelity ceiling (real test images)", "quality/label_fidelity_ceiling", "{:.2%}"),
    ("memorised share (d1/d2 < 1/3)", "quality/memorised_share", "{:.2%}"),
)


def pm(values: Sequence[float]) -> str:
    """`43.52 ± 0.11 % (n=3)` from accuracies in [0, 1]."""
    mean, std = mean_std([100 * v for v in values])
    spread = "" if std is None else f" ± {std:.2f}"
    return f"{mean:.2f}{spread} % (n={len(values)})"


def machine() -> str:
    """The hardware and software this study ran on."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or platform.machine()
        device = f"CPU only ({cpu}, {torch.get_num_threads()} torch threads)"
    return (
        f"{device}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"pytorch-lightning {pl.__version__}"
    )


def commit() -> str:
    """The checkout's commit (with `+ changes` when it has uncommitted changes), if any."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")  # fmt: skip


def figure(ctx: StageContext, path: str | Path, caption: str) -> list[str]:
    """A markdown image line for a figure that exists, else a line saying it is missing."""
    path = Path(path)
    relative = path.relative_to(ctx.folder.root) if path.is_absolute() else path
    if not (ctx.folder.root / relative).is_file():
        return [f"*{caption}: not made in this run.*", ""]
    return [f"![{caption}]({relative.as_posix()})", "", f"*{caption}.*", ""]


def answers_table(ctx: StageContext) -> list[str]:
    """The study's numbers beside ours."""
    lines = ["| question | the study | this run |", "| --- | --- | --- |"]
    classify = ctx.result("classify")
    recipes = (classify or {}).get("recipes", {})
    for mode in ("real", "augmented", "synthetic"):
        theirs = f"{STUDY_ACCURACY[mode]:.2f} % (one run)" if mode in STUDY_ACCURACY else "not run"
        ours = []
        for recipe, result in recipes.items():
            accuracies = result["metrics"]["modes"].get(mode, {}).get("test/acc")
            if accuracies:
                name = "study's MLP" if recipe == STUDY_RECIPE else f"{recipe}"
                ours.append(f"{pm(accuracies)} ({name})")
        lines.append(
            f"| Part 2: test accuracy, {mode} | {theirs} | {'; '.join(ours) or 'not run'} |"
        )
    evaluate = ctx.result("evaluate")
    fid = f"{evaluate['metrics']['quality/fid']:.2f}" if evaluate else "not run"
    lines.append(f"| Part 1: FID of the generated set (protocol below) | not measured | {fid} |")
    part3 = ctx.result("part3")
    fid3 = (part3 or {}).get("fid")
    if fid3:
        runs = fid3["runs"]
        values = ", ".join(f"{k} {v['metrics']['quality/fid']:.2f}" for k, v in runs.items())
        lines.append(
            f"| Part 3: FID, linear vs cosine ({fid3['per_class']} per class each) | "
            f"samples judged by eye | {values} |"
        )
    return lines


def quality_section(ctx: StageContext) -> list[str]:
    evaluate = ctx.result("evaluate")
    if evaluate is None:
        return ["Not measured in this run (stage `evaluate` did not run).", ""]
    metrics = evaluate["metrics"]
    lines = ["| metric | value |", "| --- | --- |"]
    for label, key, form in QUALITY_ROWS:
        if key in metrics:
            value = form.format(metrics[key])
            if key == "quality/kid" and "quality/kid_std" in metrics:
                value += f" ± {metrics['quality/kid_std']:.4f}"
            lines.append(f"| {label} | {value} |")
    protocol = evaluate.get("protocol", {})
    lines += ["", "Protocol: " + "; ".join(f"{k} {v}" for k, v in protocol.items()), ""]
    if ctx.cfg.data.channels == 1:
        lines += [
            "**Grey images**: the Inception network was trained on colour photographs; these "
            "numbers (computed with `features.allow_grey`) compare models on this data only, "
            "never with published CIFAR-10 numbers.",
            "",
        ]
    if "quality/label_fidelity" not in metrics:
        lines += ["Label fidelity: not measured (no reference classifier for this data).", ""]
    per_class = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if "/fid_class/" in k}
    if per_class:
        lines += ["Per-class FID: " + ", ".join(f"{k} {v:.1f}" for k, v in per_class.items()), ""]
    return lines


def part2_section(ctx: StageContext) -> list[str]:
    classify = ctx.result("classify")
    if classify is None:
        return ["Not run in this study (stage `classify` did not run or was left out).", ""]
    lines: list[str] = []
    for recipe, result in classify["recipes"].items():
        metrics = result["metrics"]
        lines += [
            f"### Recipe `{recipe}`",
            "",
            f"{metrics['epochs']} epochs, batch {metrics['batch_size']}, {metrics['n_real']} real "
            f"and {metrics['n_generated']} generated training images; accuracy on the real test "
            "split, mean ± sample std over seeds.",
            "",
            "| mode | test accuracy | seeds |",
            "| --- | --- | --- |",
        ]
        for mode, summary in metrics["modes"].items():
            seeds = ", ".join(map(str, summary["seeds"]))
            lines.append(f"| {mode} | {pm(summary['test/acc'])} | {seeds} |")
        lines.append("")
        out = Path(result["output_dir"])
        for mode in metrics["modes"]:
            lines += figure(ctx, out / f"loss_curves_{mode}.png", f"{recipe}, {mode}: loss curves")
        for mode in ("real", "augmented"):
            caption = f"{recipe}, {mode}: confusion matrix (summed over seeds)"
            lines += figure(ctx, out / f"confusion_{mode}.png", caption)
    return lines


def part3_section(ctx: StageContext) -> list[str]:
    part3 = ctx.result("part3")
    if part3 is None:
        return ["Not run in this study.", ""]
    lines: list[str] = []
    for name, paths in part3["figures"].items():
        if isinstance(paths, dict):
            lines += figure(ctx, paths["loss"], "diffusion loss, linear vs cosine noise schedule")
            lines += figure(ctx, paths["grid"], "samples, linear vs cosine, same noise")
        else:
            lines += figure(ctx, paths, f"{name} grid: samples of each value, same noise")
    lines += [
        "Each loss is the eps-MSE under its run's own noise schedule: levels of runs with "
        "different schedules (cosine, another beta_T or beta_1) measure different tasks and do "
        "not rank them; compare their samples and FIDs.",
        "",
        "| run | steps | val/loss |",
        "| --- | --- | --- |",
    ]
    for label, run in part3["runs"].items():
        metrics = run["metrics"]
        lines.append(
            f"| {label} | {metrics['global_step']} | {metrics.get('val/loss', 'n/a'):.4g} |"
        )
    return [*lines, ""]


def budget_notes(stage: str, notes: list[str]) -> str:
    """A stage's notes for its row of the time table, without the repeated `stage: `."""
    return "; ".join(note.removeprefix(f"{stage}: ") for note in notes)


def time_table(ctx: StageContext, total_s: float) -> list[str]:
    lines = ["| stage | wall time | rate | what the budget changed |", "| --- | --- | --- | --- |"]
    records = ctx.folder.state()["stages"]
    for stage, record in ((s, records[s]) for s in STAGE_ORDER if s in records):
        if record.get("skipped"):
            lines.append(f"| {stage} | left out | | {budget_notes(stage, record['notes'])} |")
            continue
        rate = record.get("images_per_s") or record.get("features_per_s")
        rate_text = f"{rate:.1f} img/s" if rate else ""
        notes = budget_notes(stage, record.get("notes", [])) or "nothing"
        lines.append(f"| {stage} | {record['stage_wall_s']:.0f} s | {rate_text} | {notes} |")
    lines.append(f"| whole study (this invocation) | {total_s:.0f} s | | |")
    return lines


def write_report(ctx: StageContext, total_s: float) -> Path:
    """Write `<study dir>/study.md` from the stage records; its path."""
    cfg = ctx.cfg
    budget = "none (the full recipe)" if cfg.budget_minutes is None else f"{cfg.budget_minutes} min"
    command = " ".join(["python -m diffusion_lab.study", *task_overrides()])
    train = ctx.result("train")
    lines = [
        f"# The study, rerun: `{cfg.study.name}`",
        "",
        f"- command: `{command}`",
        f"- finished: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine()}",
        f"- commit: {commit()}",
        f"- budget: {budget}",
        "",
        "## The answers",
        "",
        *answers_table(ctx),
        "",
        "## Part 1: the class-conditional DDPM",
        "",
    ]
    if train is not None:
        val_loss = train["metrics"].get("val/loss", float("nan"))
        lines += [f"{train['steps']} optimizer steps, final val/loss {val_loss:.4g}.", ""]
        lines += figure(ctx, "train/loss_curve.png", "diffusion loss (MSE on eps)")
        lines += figure(ctx, "generated/contact_sheet.png", "generated samples, a row per class")
    lines += ["## Sample quality", "", *quality_section(ctx)]
    lines += ["## Part 2: does generated data help the classifier?", "", *part2_section(ctx)]
    lines += ["## Part 3: noise schedule and grids", "", *part3_section(ctx)]
    lines += ["## Time per stage", "", *time_table(ctx, total_s), ""]
    path = ctx.folder.path("study.md")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    log.info("study: wrote %s", path)
    return path
