"""Tests for the composed Hydra config: the study's defaults and validate_train_config."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from diffusion_lab.config.schema import SCHEMAS, Switch
from diffusion_lab.config.source import compose_config
from diffusion_lab.config.train import validate_train_config
from diffusion_lab.config.type_errors import describe, field_hint
from diffusion_lab.utils.errors import ConfigError


def compose_train(*overrides):
    """The real training config; output_dir is pinned so nothing needs Hydra's runtime."""
    return compose_config("train", ["output_dir=/tmp/x", *overrides])


@pytest.fixture(scope="module")
def default_cfg():
    return compose_train()


# --- the defaults are the study's Part 1 ------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("T", 500),
        ("beta_1", 1e-4),
        ("beta_T", 0.028),
        ("schedule.betas.T", 500),
        ("schedule.betas.beta_1", 1e-4),
        ("schedule.betas.beta_T", 0.028),
        ("batch_size", 80),
        ("data.batch_size", 80),
        ("lr", 1e-4),
        ("optimizer.lr", 1e-4),
        ("epochs", 70),
        ("trainer.max_epochs", 70),
        ("img_size", 32),
        ("model.img_size", 32),
        ("model.ch", 128),
        ("model.ch_mult", [1, 2, 2, 2]),
        ("model.num_res_blocks", 2),
        ("model.attn_resolutions", [16]),
        ("model.dropout", 0.15),
        ("w", 1.8),
        ("sampler.w", 1.8),
        ("p_uncond", 0.1),
        ("module.p_uncond", 0.1),
        ("callbacks.ema.decay", 0.9999),
        ("lr_schedule.warmup_fraction", 0.1),
        ("lr_schedule.peak_factor", 2.5),
        ("trainer.gradient_clip_val", 1.0),
    ],
)
def test_defaults_are_the_studys_part_1(default_cfg, key, expected):
    value = OmegaConf.select(default_cfg, key)
    if isinstance(expected, list):
        assert OmegaConf.to_container(value) == expected
    else:
        assert value == pytest.approx(expected, rel=1e-12)
        assert type(value) is type(expected)


def test_default_groups(default_cfg):
    assert default_cfg.data._target_ == "diffusion_lab.data.CIFAR10DataModule"
    assert default_cfg.lr_schedule._target_ == "diffusion_lab.lit.lr_schedules.warmup_cosine"
    assert default_cfg.schedule.betas._target_ == "diffusion_lab.diffusion.linear_betas"


def test_top_level_override_reaches_the_schedule_by_interpolation():
    cfg = compose_train("beta_T=0.02")
    assert cfg.beta_T == 0.02
    assert cfg.schedule.betas.beta_T == 0.02
    assert compose_train("T=1000").schedule.betas.T == 1000


# --- validation passes for the shipped configs -----------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("experiment=quickstart",),
        ("data=digits",),
        ("lr_schedule=constant",),
        ("p_uncond=0", "w=0"),
    ],
)
def test_shipped_configs_pass(overrides):
    validate_train_config(compose_train(*overrides))


def test_quickstart_composes_as_documented():
    cfg = compose_train("experiment=quickstart")
    assert cfg.img_size == 16
    assert cfg.model.img_size == 16
    assert OmegaConf.to_container(cfg.model.ch_mult) == [1, 2]
    assert cfg.data._target_ == "diffusion_lab.data.DigitsDataModule"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.callbacks.ema.warmup is True
    assert cfg.trainer.precision == "bf16-mixed"


# --- validation rejects bad values with one line naming key and value -------------------------
# Values beside the rows of tests/test_bad_inputs.py: at a bound the table's value lies beyond,
# of another type, or a key the table has no row for.


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("beta_1=-1e-4", ["beta_1=-0.0001"]),
        ("beta_T=1.0", ["beta_T=1.0"]),
        ("batch_size=-4", ["batch_size=-4"]),
        ("data.batch_size=0", ["data.batch_size=0"]),
        ("lr=0", ["lr=0.0"]),
    ],
)
def test_invalid_values_raise_one_line_config_error(override, expected):
    cfg = compose_train(override)
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    # The message starts with `key=value:`, then says what is allowed.
    assert message.startswith(f"{expected[0]}:"), message
    for fragment in expected:
        assert fragment in message
    assert len(message.split(":", 1)[1].strip()) > 0


# --- unknown group options fail at composition ----------------------------------------------


@pytest.mark.parametrize(
    "override",
    ["data=nonexistent", "model=nonexistent", "experiment=nonexistent"],
)
def test_unknown_group_option_fails_to_compose(override):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as info:
        compose_train(override)
    group, option = override.split("=")
    message = str(info.value)
    assert option in message
    assert group in message


@pytest.mark.parametrize("overrides", [("trainer=gpu",), ("trainer=ddp", "trainer.devices=4")])
def test_gpu_trainer_without_a_gpu_is_one_line(overrides, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        validate_train_config(compose_train(*overrides))
    assert str(info.value) == "trainer.accelerator='gpu': no CUDA GPU is visible; use trainer=cpu"


# --- the schemas of the primary configs -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_primary_config_composes_typed_by_its_schema(name):
    cfg = compose_config(name)
    assert OmegaConf.get_type(cfg) is SCHEMAS[name]
    # The schema types; the values are the YAML's.
    assert "???" not in OmegaConf.to_yaml(cfg)


@pytest.mark.parametrize(
    ("hint", "words"),
    [
        (int, "an integer"),
        (float | None, "null or a number"),
        (list[int] | None, "null or a list of integers"),
        (dict[str, float], "a mapping to numbers"),
        (Switch, "true, false or auto"),
    ],
)
def test_a_type_is_described_as_the_other_checks_describe_it(hint, words):
    assert describe(hint) == words


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("perf.compile", Switch),
        ("study.classify.seeds[1]", int),
        ("study.budget.weights.training", float),
        ("budget_minutes", float | None),
        ("model.ch", None),
    ],
)
def test_the_type_of_a_nested_key_is_found_in_the_schema(key, hint):
    assert field_hint(SCHEMAS["study"], key) == hint
