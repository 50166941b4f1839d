"""The study's checks before any work: its own settings, every stage's config, data, weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from diffusion_lab.config.checks import is_int, is_number, require
from diffusion_lab.config.classify import validate_classify_config
from diffusion_lab.config.source import config_files
from diffusion_lab.config.train import validate_train_config
from diffusion_lab.jobs.evaluate import validate_evaluate_config
from diffusion_lab.jobs.generate import validate_generate_config
from diffusion_lab.quality.features import default_weights
from diffusion_lab.scoring.features import NO_WEIGHTS
from diffusion_lab.stages import compose
from diffusion_lab.stages.budget import STAGE_ORDER
from diffusion_lab.stages.part3 import planned_runs
from diffusion_lab.utils.errors import ConfigError

# A stage and the earlier stages whose results it reads.
NEEDS = {"generate": ("train",), "evaluate": ("generate",), "classify": ("generate",)}
NEEDS["part3"] = ("train",)


def validate_study_config(cfg: DictConfig) -> None:
    """The `study.*` settings and budget_minutes, cheapest first."""
    budget = cfg.budget_minutes
    require(
        budget is None or (is_number(budget) and budget > 0),
        "budget_minutes",
        budget,
        "must be null (no budget: the full recipe) or a number of minutes > 0",
    )
    study = cfg.study
    stages = list(study.stages)
    allowed = f"must be a non-empty list of {', '.join(STAGE_ORDER)}"
    require(stages and set(stages) <= set(STAGE_ORDER), "study.stages", stages, allowed)
    for stage in stages:
        for needed in NEEDS.get(stage, ()):
            require(
                needed in stages,
                "study.stages",
                stages,
                f"{stage} needs {needed}, which is not included",
            )
    for key in ("generate.per_class", "generate.min_per_class", "generate.batch_size"):
        value = study[key.split(".")[0]][key.split(".")[1]]
        require(is_int(value) and value > 0, f"study.{key}", value, "must be a positive integer")
    for key in ("per_class", "reference_per_class"):
        value = study.evaluate[key]
        require(
            value is None or (is_int(value) and value >= 2),
            f"study.evaluate.{key}",
            value,
            "must be null (all) or an integer >= 2 (a class's FID needs 2 images)",
        )
    for name in study.part3.grids:
        presets = config_files() / "experiment"
        require(
            (presets / f"part3_{name}.yaml").is_file(),
            "study.part3.grids",
            list(study.part3.grids),
            f"no preset conf/experiment/part3_{name}.yaml; use beta_T, beta_1 or img_size",
        )
    weights = study.budget.weights
    for key in ("training", "generate", "evaluate", "classify"):
        value = weights.get(key)
        require(is_number(value) and value > 0, f"study.budget.weights.{key}", value, "> 0")


def check_stage_configs(cfg: DictConfig, stages: Sequence[str], root: Path) -> None:
    """Compose and check the config of every stage that will run."""
    validate_train_config(compose.train_config(root / "train"))
    if "part3" in stages:
        for label, override in planned_runs(cfg):
            if override is not None:
                validate_train_config(compose.train_config(root / "part3" / label, [override]))
    placeholder = root / "train" / "checkpoints" / "last.ckpt"
    if "generate" in stages:
        validate_generate_config(compose.generate_config(cfg, placeholder, root, 1))
    if "evaluate" in stages or "part3" in stages:
        evaluate_cfg = compose.evaluate_config(
            cfg, [f"ckpt={compose.override_value(str(placeholder))}"], root / "evaluate"
        )
        validate_evaluate_config(evaluate_cfg)
        weights = evaluate_cfg.features.weights or default_weights()
        if weights is None:
            raise ConfigError(NO_WEIGHTS)
        require(Path(weights).is_file(), "features.weights", str(weights), "no such file")
        classifier = compose.reference_classifier(cfg)
        require(
            classifier is None or Path(classifier).is_file(),
            "study.evaluate.reference_classifier",
            classifier,
            "no such file",
        )
    if "classify" in stages:
        for recipe in cfg.study.classify.recipes:
            classify_cfg = compose.classify_config(cfg, recipe, root / "generated", root)
            validate_classify_config(classify_cfg)


def check_inputs(cfg: DictConfig, stages: Sequence[str]) -> None:
    """Every stage's config and the training data, before any work."""
    check_stage_configs(cfg, stages, Path(cfg.output_dir))
    # Missing data (CIFAR-10 offline) stops here with the datamodule's own one line.
    instantiate(compose.train_config(Path(cfg.output_dir) / "train").data).prepare_data()
