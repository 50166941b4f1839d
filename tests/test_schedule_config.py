"""Schedule-aware validation: keys a schedule ignores, betas it cannot take, and diagnostics."""

from __future__ import annotations

import json
import logging

import pytest

from diffusion_lab.config.train import schedule_name, used_schedule_keys, validate_train_config
from diffusion_lab.lit.diagnostics import ScheduleDiagnostics
from diffusion_lab.reporting import job_dirs
from diffusion_lab.utils.errors import ConfigError

IGNORED = "does not use {key}; drop the override (every job of a sweep would be identical)"


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("linear", {"T", "beta_1", "beta_T"}),
        ("quadratic", {"T", "beta_1", "beta_T"}),
        ("sigmoid", {"T", "beta_1", "beta_T"}),
        ("cosine", {"T"}),
    ],
)
def test_used_keys_are_read_from_the_schedule_node(compose_train, name, keys):
    cfg = compose_train(f"schedule={name}")
    assert used_schedule_keys(cfg) == keys
    assert schedule_name(cfg) == name
    validate_train_config(cfg)  # the defaults are fine for every schedule


# beta_T away from its default is a row of tests/test_bad_inputs.py.
@pytest.mark.parametrize(("key", "value"), [("beta_1", 0.001)])
def test_cosine_with_a_beta_away_from_its_default_is_refused(compose_train, key, value):
    cfg = compose_train("schedule=cosine", f"{key}={value}")
    with pytest.raises(ConfigError) as err:
        validate_train_config(cfg)
    assert str(err.value) == f"{key}={value}: schedule=cosine " + IGNORED.format(key=key)


def test_cosine_with_a_beta_equal_to_the_default_is_accepted(compose_train):
    validate_train_config(compose_train("schedule=cosine", "beta_T=0.028", "beta_1=1e-4"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("schedule=quadratic", "beta_T=1.0"), "beta_T=1.0: must be a number < 1"),
        (("schedule=sigmoid", "beta_1=0"), "beta_1=0.0: must be a number > 0"),
        (("schedule=quadratic", "beta_1=0.05"), "beta_1=0.05: must be < beta_T=0.028"),
        (
            ("schedule=cosine", "schedule.betas.max_beta=1.0"),
            "schedule=cosine: every beta must lie in (0, 1)",
        ),
    ],
)
def test_betas_a_schedule_cannot_take(compose_train, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate_train_config(compose_train(*overrides))
    assert str(err.value) == message


def test_sweep_over_an_ignored_key_stops_before_training_in_one_line(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train",
        "--multirun",
        "schedule=cosine",
        "beta_T=0.01,0.02",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    # Each job stops before training with its one line, the sweep goes on, and ends with 2.
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[:2] == [
        f"error: beta_T={value}: schedule=cosine " + IGNORED.format(key="beta_T")
        for value in ("0.01", "0.02")
    ]
    assert lines[2] == f"error: 2 of 2 sweep jobs failed; see {sweep / 'failures.json'}"
    failed = json.loads((sweep / "failures.json").read_text())["failed"]
    assert [f["job"] for f in failed] == [p.name for p in job_dirs(sweep)]
    assert not [p for p in sweep.rglob("*") if p.name.startswith("events.out")]


@pytest.mark.parametrize(("beta_T", "warns"), [(0.028, False), (0.01, True)])
def test_diagnostics_report_terminal_signal_and_warn_above_the_limit(
    compose_train, tmp_path, caplog, beta_T, warns
):
    from hydra.utils import instantiate

    cfg = compose_train("T=500", f"beta_T={beta_T}")
    module = instantiate(cfg.module)
    trainer = type(
        "FakeTrainer",
        (),
        {"is_global_zero": True, "loggers": [], "global_step": 0, "ckpt_path": None},
    )
    callback = ScheduleDiagnostics(str(tmp_path), max_alpha_bar_T=1e-3)
    with caplog.at_level(logging.INFO, logger="diffusion_lab.lit.diagnostics"):
        callback.on_fit_start(trainer, module)
    alpha_bar_T = float(module.schedule.alpha_bars[-1])
    assert f"alpha_bar_T={alpha_bar_T:.3g}" in caplog.messages[0]
    assert any(r.levelno == logging.WARNING for r in caplog.records) == warns
    assert (tmp_path / "schedule.png").stat().st_size > 0
