"""The study's budget rule and the training run that sizes itself to a deadline."""

from __future__ import annotations

import json
import math
import time

import pytest
from omegaconf import open_dict

from diffusion_lab.lit.budget import BUDGET_FILE, TrainingBudget, steps_within
from diffusion_lab.lit.lr_schedules import warmup_cosine_factor
from diffusion_lab.stages.budget import Budget, largest_fitting, stage_weights
from diffusion_lab.stages.folder import StudyFolder, differing_keys
from diffusion_lab.stages.report import budget_notes
from diffusion_lab.utils.errors import ConfigError

WEIGHTS = {"training": 0.6, "generate": 0.1, "evaluate": 0.1, "classify": 0.2}


def test_training_weight_is_shared_equally_by_the_training_runs():
    weights = stage_weights(WEIGHTS, ["train", "generate", "part3"], training_runs=4)
    assert weights == pytest.approx({"train": 0.15, "generate": 0.1, "part3": 0.45})
    assert list(weights) == ["train", "generate", "part3"]


def test_deadlines_are_cumulative_shares_of_the_budget_after_the_reserve():
    weights = stage_weights(WEIGHTS, ["train", "generate", "evaluate", "classify"], 1)
    budget = Budget(total_s=120.0, weights=weights, reserve_s=20.0, start=1000.0)
    # 100 s usable: train 60 %, generate 10 %, evaluate 10 %, classify 20 %.
    assert budget.deadline("train") == pytest.approx(1060.0)
    assert budget.deadline("generate") == pytest.approx(1070.0)
    assert budget.deadline("evaluate") == pytest.approx(1080.0)
    assert budget.deadline("classify") == pytest.approx(1100.0)


def test_no_budget_means_no_deadlines():
    budget = Budget(total_s=None, weights={"train": 1.0})
    assert budget.deadline("train") is None
    assert budget.seconds_left("train") is None
    assert budget.fits("train", 1e9)


def test_largest_fitting():
    assert largest_fitting(5000, 0.25, 12.0, least=0) == 48
    assert largest_fitting(5000, 0.25, 2000.0, least=0) == 5000
    assert largest_fitting(5000, 0.25, None, least=0) == 5000
    assert largest_fitting(5000, 10.0, 5.0, least=2) == 2


@pytest.mark.parametrize(
    ("seconds", "rate", "per_epoch", "validation_s", "expected"),
    [
        (10.0, 10.0, 20, 0.0, 100),  # no validation cost: rate * seconds
        # 3 s per epoch (2 s of steps, 1 s validation): 3 epochs in 9 s; the last second would
        # pay a fourth validation with nothing left for its steps.
        (10.0, 10.0, 20, 1.0, 60),
        (11.5, 10.0, 20, 1.0, 75),  # 9 s, then 1.5 s of steps and their validation
        (0.0, 10.0, 20, 1.0, 0),
        (-5.0, 10.0, 20, 1.0, 0),
    ],
)
def test_steps_within_pays_one_validation_per_epoch(
    seconds, rate, per_epoch, validation_s, expected
):
    steps = steps_within(seconds, rate, per_epoch, validation_s)
    # Closed form: the steps S and their validations ceil(S / per_epoch) fit the seconds.
    assert steps / rate + math.ceil(steps / per_epoch) * validation_s <= max(seconds, 0) + 1e-9
    more = steps + 1
    assert more / rate + math.ceil(more / per_epoch) * validation_s > seconds - 1e-9
    assert steps == expected


def test_a_study_folder_refuses_another_config_and_names_the_keys(tmp_path):
    StudyFolder(tmp_path, {"lr": 1e-4, "study": {"force_config": False}}).save_config()
    again = StudyFolder(tmp_path, {"lr": 1e-4, "budget_minutes": 3})
    again.check(force=False)  # the budget decides how long, not what: not a difference
    other = StudyFolder(tmp_path, {"lr": 2e-4, "beta_T": 0.02})
    with pytest.raises(ConfigError, match=r"2 keys differ: beta_T, lr\);.*study.force_config=true"):
        other.check(force=False)
    other.check(force=True)
    assert differing_keys({"a": {"b": 1}}, {"a": {"b": 2, "c": 3}}) == ["a.b", "a.c"]


@pytest.mark.slow
def test_training_sizes_itself_to_its_deadline_and_its_schedule_follows(compose_train, tmp_path):
    """A run launched far too long is cut to what fits before its deadline, and the warm-up
    cosine schedule is rebuilt for that length: the last step's rate is its end of decay."""
    from diffusion_lab.jobs.train import train

    cfg = compose_train(
        "trainer.limit_train_batches=null",
        "epochs=1000",
        "callbacks.sample_grid.every_n_epochs=1000",
        "callbacks.checkpoint.every_n_epochs=1000",
    )
    deadline = time.time() + 6.0
    with open_dict(cfg):
        cfg.callbacks.budget = {
            "_target_": "diffusion_lab.lit.budget.TrainingBudget",
            "deadline": deadline,
            "probe_steps": 5,
            "skip_steps": 2,
            "record_dir": cfg.output_dir,
        }
    metrics = train(cfg)
    record = json.loads((tmp_path / "run" / BUDGET_FILE).read_text())
    steps = record["steps"]
    assert metrics["global_step"] == steps
    assert 7 <= steps < 1000 * 93  # sized, far below the 1000 epochs launched
    decision = record["decisions"][0]
    assert decision["reason"] == "probe" and decision["steps_per_s"] > 0
    # The per-step learning rates LearningRateMonitor logged end where a schedule of `steps`
    # steps ends (warm-up to 2.5x over 10 %, cosine to 0), not where 1000 epochs would.
    lr = cfg.lr
    expected_last = lr * warmup_cosine_factor(steps - 1, steps, 0.1, 2.5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    logged = events.Scalars("train/lr")
    assert logged[-1].step == steps - 1
    assert logged[-1].value == pytest.approx(expected_last, rel=1e-5, abs=1e-12)


def test_a_restored_budget_keeps_its_length():
    callback = TrainingBudget(deadline=0.0)
    callback.load_state_dict({"steps": 123, "decisions": [{"reason": "probe"}]})
    assert callback.steps == 123
    assert callback.state_dict()["decisions"] == [{"reason": "probe"}]


def test_the_time_table_lists_a_stages_notes_once_each_without_the_stage_name():
    notes = ["classify: recipe mlp_seed for 2 epochs instead of 40", "classify: recipe mlp out"]
    assert budget_notes("classify", notes) == (
        "recipe mlp_seed for 2 epochs instead of 40; recipe mlp out"
    )
