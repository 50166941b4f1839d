"""The configs of the study's stages, composed from the study's own config and command line.

Every stage runs an entry point's own function (`train`, `generate`, `evaluate`, `classify`)
on the config that command would compose, so a stage behaves as the command typed by hand.
The study's data, image size, guidance weight, sampler and fast-path settings reach each one as
overrides, so e.g. `study experiment=quickstart` generates and classifies the digits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from diffusion_lab.cli import overrides as command_line
from diffusion_lab.config.data import infer_num_classes

# Keys of the study config that are not part of the training config.
STUDY_KEYS = ("study", "budget_minutes")


def compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """A command's config as its command line would compose it; a refusal (unknown key or
    option) is one ConfigError with a hint, as on the command line."""
    cfg = command_line.compose(config_name, overrides, RunMode.RUN)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def task_overrides() -> list[str]:
    """The overrides the study was started with (none outside a Hydra run)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def choice(group: str, default: str) -> str:
    """The option the study uses for a config group (e.g. data -> cifar10)."""
    if not HydraConfig.initialized():
        return default
    value = HydraConfig.get().runtime.choices.get(group)
    return default if value is None else str(value)


def override_value(value: Any) -> str:
    """`value` in Hydra's override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


def overrides_of(prefix: str, node: DictConfig, skip: Iterable[str] = ()) -> list[str]:
    """`prefix.key=value` for every plain value of `node`: interpolations (which the target
    config resolves itself) and `skip` are left out."""
    plain = OmegaConf.to_container(node, resolve=False)
    return [
        f"{prefix}.{key}={override_value(value)}"
        for key, value in plain.items()
        if key not in skip
        and not key.startswith("_")
        and not (isinstance(value, str) and value.startswith("${"))
        and not isinstance(value, dict)
    ]


def without_keys(overrides: Sequence[str], keys: Iterable[str]) -> list[str]:
    """`overrides` minus those that set one of `keys` (a later override replaces them)."""
    keys = set(keys)
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys]


def train_config(output_dir: Path, extra: Sequence[str] = ()) -> DictConfig:
    """A training run's config: the study's command line plus `extra`, without the study keys."""
    extra_keys = [o.split("=", 1)[0] for o in extra]
    overrides = [
        *without_keys(task_overrides(), extra_keys),
        *extra,
        f"output_dir={override_value(str(output_dir))}",
    ]
    composed = compose("study", overrides)
    infer_num_classes(composed.data)
    return OmegaConf.masked_copy(composed, [k for k in composed if k not in STUDY_KEYS])


def data_overrides(cfg: DictConfig) -> list[str]:
    """The study's data (group option and its plain keys) and image size, for another command."""
    return [
        f"data={choice('data', 'cifar10')}",
        *overrides_of("data", cfg.data, skip=("on_device",)),
        f"img_size={cfg.img_size}",
    ]


def sampler_overrides(cfg: DictConfig) -> list[str]:
    """The study's sampler (group option and settings) and guidance weight."""
    return [
        f"sampler={choice('sampler', 'dpmpp_2m')}",
        *overrides_of("sampler", cfg.sampler, skip=("w",)),
        f"w={cfg.w}",
    ]


def perf_overrides(cfg: DictConfig) -> list[str]:
    return [f"perf.{k}={override_value(cfg.perf[k])}" for k in ("compile", "channels_last", "tf32")]


def generate_config(cfg: DictConfig, ckpt: Path, out: Path, per_class: int) -> DictConfig:
    """generate's config for the Part 2 set of `per_class` images of every class."""
    settings = cfg.study.generate
    return compose(
        "generate",
        [
            f"ckpt={override_value(str(ckpt))}",
            f"out={override_value(str(out))}",
            f"output_dir={override_value(str(out))}",
            f"per_class={per_class}",
            f"shard_size={settings.batch_size}",
            f"seed={settings.seed}",
            *sampler_overrides(cfg),
            *perf_overrides(cfg),
        ],
    )


# The committed CIFAR-10 reference CNN of label fidelity (76.7 % test accuracy), in a checkout.
CIFAR10_REFERENCE = (
    Path(__file__).resolve().parents[2] / "experiments/quality/reference_classifier/reference.ckpt"
)


def reference_classifier(cfg: DictConfig) -> str | None:
    """study.evaluate.reference_classifier, with `auto`: the committed CIFAR-10 reference for
    CIFAR-10 at 32x32 where the checkout has it, else none (label fidelity not measured)."""
    setting = cfg.study.evaluate.reference_classifier
    if setting != "auto":
        return setting
    cifar = choice("data", "cifar10") == "cifar10" and cfg.img_size == 32
    return str(CIFAR10_REFERENCE) if cifar and CIFAR10_REFERENCE.is_file() else None


def evaluate_config(cfg: DictConfig, source: Sequence[str], output_dir: Path) -> DictConfig:
    """evaluate's config for `source` (`set=PATH` or `ckpt=PATH per_class=N`) on the study's
    data, with the study's evaluate settings."""
    settings = cfg.study.evaluate
    return compose(
        "evaluate",
        [
            *source,
            *data_overrides(cfg),
            *sampler_overrides(cfg),
            f"output_dir={override_value(str(output_dir))}",
            f"reference_classifier={override_value(reference_classifier(cfg))}",
            f"reference.per_class={override_value(settings.reference_per_class)}",
            f"seed={cfg.study.generate.seed}",
            # Grey data (the digits): FID etc. comparable between models on this data only;
            # study.md says so beside the numbers.
            f"features.allow_grey={override_value(cfg.data.channels == 1)}",
            *settings.overrides,
        ],
    )


def classify_config(cfg: DictConfig, recipe: str, synthetic: Path, output_dir: Path) -> DictConfig:
    """classify's config for one recipe trained on every mode and seed as one batched run."""
    settings = cfg.study.classify
    return compose(
        "classify",
        [
            f"model={recipe}",
            f"synthetic={override_value(str(synthetic))}",
            f"output_dir={override_value(str(output_dir))}",
            f"trainer={choice('trainer', 'default')}",
            *data_overrides(cfg),
            f"modes={override_value(list(settings.modes))}",
            f"seeds={override_value(list(settings.seeds))}",
            *settings.overrides,
        ],
    )
