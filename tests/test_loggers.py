"""logger=: CSV beside TensorBoard (train and evaluate), MLflow with a local file store, a
missing package."""

from __future__ import annotations

import csv
import importlib.util
import logging
from pathlib import Path

import pytest
import yaml

from diffusion_lab.jobs.evaluate import evaluate
from diffusion_lab.jobs.train import train
from diffusion_lab.tracking.loggers import build_logger, check_logger_packages
from diffusion_lab.utils.errors import ConfigError
from tests.feature_standin import save_stand_in
from tests.test_evaluate import DDIM5, compose_evaluate
from tests.test_generate import save_tiny_checkpoint
from tests.test_train import tensorboard_tags

SKIP_WARNING = "CSVLogger takes no figures"


@pytest.mark.slow
def test_csv_beside_tensorboard_gets_scalars_hparams_and_one_warning(compose_train, caplog):
    cfg = compose_train("logger=[tensorboard,csv]")
    with caplog.at_level(logging.WARNING, logger="diffusion_lab.tracking.loggers"):
        metrics = train(cfg)
    run = Path(cfg.output_dir)
    with (run / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    val_losses = [float(r["val/loss"]) for r in rows if r["val/loss"]]
    assert val_losses[-1] == pytest.approx(metrics["val/loss"])
    train_steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert train_steps == list(range(metrics["global_step"]))  # every step's loss
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert hparams["beta_T"] == 0.028 and hparams["T"] == 20
    # TensorBoard still gets the figures: the schedule and the sample grids.
    assert {"train/schedule", "val/samples"} <= set(tensorboard_tags(run)["images"])
    assert [r.getMessage() for r in caplog.records].count(
        f"{SKIP_WARNING}: skipped there (the run folder has them)"
    ) == 1


def test_many_is_tensorboard_and_csv(compose_train):
    assert set(compose_train("logger=many").logger) == {"tensorboard", "csv"}


def test_a_missing_logger_package_is_named_with_its_extra(compose_train, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    cfg = compose_train("logger=[tensorboard,wandb]")
    with pytest.raises(ConfigError) as err:
        check_logger_packages(cfg.logger)
    assert str(err.value) == (
        'logger=wandb: needs the package wandb, which is not installed: pip install -e ".[wandb]"'
    )


@pytest.mark.slow
def test_mlflow_file_store_gets_metrics_params_and_figures(compose_train, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    # conf/logger/mlflow.yaml sets it through hydra.job.env_set, which compose does not apply.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = f"file:{tmp_path / 'mlruns'}"
    cfg = compose_train(
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={store}",
        "logger.mlflow.experiment_name=test",
        "logger.mlflow.run_name=tiny",
    )
    metrics = train(cfg)
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.data.metrics["val/loss"] == pytest.approx(metrics["val/loss"])
    assert run.data.params["beta_T"] == "0.028"
    folders = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert folders == {"train", "val"}
    grids = client.list_artifacts(run.info.run_id, "val/samples")
    assert [Path(a.path).name for a in grids] == ["step0000002.png", "step0000005.png"]


@pytest.mark.slow
def test_evaluate_writes_its_metrics_to_every_logger(tmp_path):
    weights = save_stand_in(tmp_path / "standin.pt")
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    cfg = compose_evaluate(
        tmp_path, weights, f"ckpt={ckpt}", *DDIM5, "reference.per_class=20", "logger=many"
    )
    metrics = evaluate(cfg)
    run = tmp_path / "run"
    with (run / "csv" / "metrics.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert float(row["quality/fid"]) == pytest.approx(metrics["quality/fid"])
    assert yaml.safe_load((run / "csv" / "hparams.yaml").read_text())["per_class"] == 3
    assert list(run.glob("events.out.tfevents.*"))


def test_a_resumed_csv_logger_writes_beside_the_first_file(compose_train):
    logger_cfg = compose_train("logger=csv").logger.csv
    first, resumed = build_logger(logger_cfg, None), build_logger(logger_cfg, 3)
    assert Path(resumed.log_dir) == Path(first.log_dir) / "resumed_step0000003"
