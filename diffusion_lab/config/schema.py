"""The types of the primary configs' keys, as Hydra structured configs (dataclasses).

Each primary config in conf/ names its schema first in its defaults list (`- schema: train`),
so OmegaConf refuses a value of the wrong type (`epochs=abc`, `lr=true`) and an unknown key
while Hydra composes, before any work; `config/type_errors.py` turns that refusal into the
suite's one line. The values stay in the YAML files (every field here is MISSING): the schema
only types them. Config groups (`model`, `sampler`, ...) are `Any`: each option has keys of its
own, which the constructors and `config/` check. Ranges and rules across keys are checked in
`config/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# OmegaConf reads the annotations at run time: no `X | None` here (it needs typing.Optional).
# ruff: noqa: UP007, UP045

# true, false or auto.
Switch = Union[bool, str]


@dataclass
class TrainPerf:
    compile: Switch = MISSING
    compile_mode: str = MISSING
    channels_last: Switch = MISSING
    fused_optimizer: bool = MISSING
    tf32: bool = MISSING
    data_on_device: bool = MISSING


@dataclass
class FitSchema:
    """The keys `train` and `classify` share: a Lightning fit of a network on a data group."""

    img_size: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    epochs: int = MISSING
    seed: int = MISSING
    output_dir: str = MISSING
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    lr_schedule: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING
    module: Any = MISSING


@dataclass
class TrainSchema(FitSchema):
    T: int = MISSING
    beta_1: float = MISSING
    beta_T: float = MISSING
    p_uncond: float = MISSING
    w: float = MISSING
    ckpt_path: Optional[str] = MISSING
    optimized_metric: str = MISSING
    perf: TrainPerf = field(default_factory=TrainPerf)
    schedule: Any = MISSING
    sampler: Any = MISSING


@dataclass
class StudyBudget:
    reserve_s: float = MISSING
    weights: dict[str, float] = MISSING


@dataclass
class StudyGenerate:
    per_class: int = MISSING
    min_per_class: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING


@dataclass
class StudyEvaluate:
    per_class: Optional[int] = MISSING
    reference_per_class: Optional[int] = MISSING
    reference_classifier: Optional[str] = MISSING
    overrides: list[str] = MISSING


@dataclass
class StudyClassify:
    modes: list[str] = MISSING
    seeds: list[int] = MISSING
    recipes: list[str] = MISSING
    overrides: list[str] = MISSING


@dataclass
class StudyPart3:
    schedule: bool = MISSING
    grids: list[str] = MISSING
    per_class: int = MISSING
    grid_per_class: int = MISSING


@dataclass
class StudySettings:
    name: str = MISSING
    force_config: bool = MISSING
    stages: list[str] = MISSING
    budget: StudyBudget = field(default_factory=StudyBudget)
    generate: StudyGenerate = field(default_factory=StudyGenerate)
    evaluate: StudyEvaluate = field(default_factory=StudyEvaluate)
    classify: StudyClassify = field(default_factory=StudyClassify)
    part3: StudyPart3 = field(default_factory=StudyPart3)


@dataclass
class StudySchema(TrainSchema):
    budget_minutes: Optional[float] = MISSING
    study: StudySettings = field(default_factory=StudySettings)


@dataclass
class GeneratePerf:
    compile: Switch = MISSING
    compile_mode: str = MISSING
    channels_last: Switch = MISSING
    tf32: bool = MISSING


@dataclass
class GenerateSchema:
    ckpt: Optional[str] = MISSING
    per_class: int = MISSING
    out: str = MISSING
    shard_size: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    w: float = MISSING
    contact_sheet: bool = MISSING
    contact_sheet_columns: int = MISSING
    export: Optional[str] = MISSING
    output_dir: str = MISSING
    perf: GeneratePerf = field(default_factory=GeneratePerf)
    sampler: Any = MISSING
    fabric: Any = MISSING


@dataclass
class ClassifyPerf:
    compile: Switch = MISSING
    compile_mode: str = MISSING


@dataclass
class ClassifySchema(FitSchema):
    mode: str = MISSING
    synthetic: Optional[str] = MISSING
    generated_per_class: Optional[int] = MISSING
    real_per_class: Optional[int] = MISSING
    label_smoothing: float = MISSING
    crop_padding: int = MISSING
    modes: Optional[list[str]] = MISSING
    seeds: Optional[list[int]] = MISSING
    perf: ClassifyPerf = field(default_factory=ClassifyPerf)
    datamodule: Any = MISSING


@dataclass
class EvaluateReference:
    split: str = MISSING
    per_class: Optional[int] = MISSING


@dataclass
class EvaluateFeatures:
    weights: Optional[str] = MISSING
    input_size: int = MISSING
    dim: int = MISSING
    batch_size: Optional[int] = MISSING
    threads: Optional[int] = MISSING
    channels_last: bool = MISSING
    bf16: bool = MISSING
    allow_grey: bool = MISSING


@dataclass
class EvaluateKID:
    subsets: int = MISSING
    subset_size: int = MISSING


@dataclass
class EvaluatePrecisionRecall:
    k: int = MISSING


@dataclass
class EvaluateMemorisation:
    threshold: float = MISSING
    pairs: int = MISSING


@dataclass
class EvaluateSchema:
    ckpt: Optional[str] = MISSING
    set: Optional[str] = MISSING
    per_class: int = MISSING
    set_per_class: Optional[int] = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    w: float = MISSING
    img_size: int = MISSING
    device: str = MISSING
    reference: EvaluateReference = field(default_factory=EvaluateReference)
    cache_dir: str = MISSING
    features: EvaluateFeatures = field(default_factory=EvaluateFeatures)
    kid: EvaluateKID = field(default_factory=EvaluateKID)
    precision_recall: EvaluatePrecisionRecall = field(default_factory=EvaluatePrecisionRecall)
    memorisation: EvaluateMemorisation = field(default_factory=EvaluateMemorisation)
    reference_classifier: Optional[str] = MISSING
    output_dir: str = MISSING
    data: Any = MISSING
    sampler: Any = MISSING
    logger: Any = MISSING


# conf/<name>.yaml -> its schema, stored as `schema/<name>`.
SCHEMAS: dict[str, type] = {
    "train": TrainSchema,
    "study": StudySchema,
    "generate": GenerateSchema,
    "classify": ClassifySchema,
    "evaluate": EvaluateSchema,
}


def register_schemas() -> None:
    """Store the schemas where the primary configs' defaults lists name them."""
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(group="schema", name=name, node=schema, package="_global_")
