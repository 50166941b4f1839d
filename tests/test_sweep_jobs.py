"""How sweep jobs are told apart: folder names, their order, and the HParams keys they log."""

from __future__ import annotations

import pytest
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from diffusion_lab.config.folders import JOB_NAME_MAX, job_folder_name
from diffusion_lab.config.source import config_source
from diffusion_lab.jobs.train import KEY_PARAMS
from diffusion_lab.reporting import job_dirs
from diffusion_lab.tracking.hparams import hparams_table


def test_job_folder_name_is_number_then_safe_overrides_capped():
    assert job_folder_name(0, "beta_T=0.01") == "0_beta_T=0.01"
    assert job_folder_name(3) == "3"
    assert job_folder_name(1, "experiment=[quickstart,part3_beta_T]") == (
        "1_experiment=_quickstart,part3_beta_T_"
    )
    assert job_folder_name(2, "out=a/b c") == "2_out=a_b_c"
    assert len(job_folder_name(12, "x=" + "9" * 200)) == JOB_NAME_MAX


def test_job_dirs_sort_by_job_number_with_or_without_names(tmp_path):
    names = ["10_lr=0.1", "2_lr=0.3", "1", "0_lr=0.2"]
    for name in [*names, "not_a_job"]:
        (tmp_path / name).mkdir()
    for name in names:
        (tmp_path / name / ".hydra").mkdir()
    assert [p.name for p in job_dirs(tmp_path)] == ["0_lr=0.2", "1", "2_lr=0.3", "10_lr=0.1"]


@pytest.fixture
def hydra_train_config():
    """compose(overrides) -> the train config with its `hydra` node, set as HydraConfig."""
    with config_source():

        def _compose(*overrides: str):
            cfg = compose("train", list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            return cfg

        yield _compose
    HydraConfig.instance().cfg = None


def test_hparams_are_overrides_changed_groups_and_key_scalars(hydra_train_config):
    cfg = hydra_train_config("beta_T=0.01", "experiment=quickstart", "model.ch=8", "ckpt_path=x")
    run_config = OmegaConf.to_container(cfg, resolve=False)
    run_config.pop("hydra")
    params = hparams_table(run_config, KEY_PARAMS)
    assert list(params)[:4] == ["beta_T", "group/experiment", "model.ch", "ckpt_path"]
    assert params["beta_T"] == 0.01 and params["model.ch"] == 8
    # quickstart's own group choices differ from train.yaml's defaults; the rest do not.
    assert params["group/data"] == "digits" and params["group/trainer"] == "cpu"
    assert "group/schedule" not in params and "group/model" not in params
    assert set(KEY_PARAMS) <= set(params)
    assert "output_dir" not in params and "perf.compile" not in params


def test_a_list_of_experiments_is_one_hparams_value(hydra_train_config):
    cfg = hydra_train_config("experiment=[quickstart,part3_beta_T]")
    run_config = OmegaConf.to_container(cfg, resolve=False)
    assert hparams_table(run_config, ())["group/experiment"] == "[quickstart,part3_beta_T]"
