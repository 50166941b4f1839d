"""The batched classifier stage: every (mode, seed) pair of `classify` trained as one model.

    python -m diffusion_lab.classify synthetic=PATH modes=[real,augmented,synthetic] seeds=[1,2,3]
    python -m diffusion_lab.classify model=mlp_seed modes=[real] seeds=[1,2,3]

`classify_ensemble(cfg)` (also what `classify` runs when `modes` or `seeds` is set) builds each
member as the standalone run of its mode and seed would (same initial weights, whitening fitted
on its own training set, same epoch order, learning-rate schedule and optimizer), stacks them
(`MLPEnsemble`) and trains them together on one device (`EnsembleClassifierModule`). Writes into
`cfg.output_dir`: metrics.json, loss_curves_<mode>.png, confusion_<mode>.png,
loss_history_<mode>_seed<seed>.csv and the TensorBoard event file; returns the metrics.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from diffusion_lab.cli.entry_points import print_summary
from diffusion_lab.config.classify import validate_classify_config, validate_ensemble_config
from diffusion_lab.data.classification import ClassificationDataModule
from diffusion_lab.data.members import Member, MemberSchedule, mode_range
from diffusion_lab.data.tensors import to_signed_unit
from diffusion_lab.lit.ensemble import EnsembleClassifierModule
from diffusion_lab.nets.ensemble import MLPEnsemble
from diffusion_lab.nets.ensemble_adam import AdamSettings
from diffusion_lab.reporting.classify_ensemble import ensemble_metrics, write_outputs
from diffusion_lab.tracking.loggers import build_logger
from diffusion_lab.tracking.tensorboard import RunTensorBoardLogger


def ensemble_requested(cfg: DictConfig) -> bool:
    """Whether `classify` runs the batched stage: `modes` or `seeds` is set."""
    return cfg.get("modes") is not None or cfg.get("seeds") is not None


def requested_members(cfg: DictConfig) -> tuple[Any, Any]:
    """(modes, seeds) as configured; an unset one is the single run's `mode` or `seed`."""
    single = cfg.mode if cfg.mode != "auto" else ("augmented" if cfg.synthetic else "real")
    modes = cfg.modes if cfg.get("modes") is not None else [single]
    seeds = cfg.seeds if cfg.get("seeds") is not None else [cfg.seed]
    as_python = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (modes, seeds))
    return tuple(as_python)


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """The configured Trainer for one pass over the members' segments, validating after each."""
    progress = cfg.callbacks.get("progress")
    # A training batch is a whole segment (up to an epoch of steps): refresh after each one.
    callbacks = (
        [instantiate(progress, refresh_rate=min(1, progress.refresh_rate))] if progress else []
    )
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=[build_logger(c, None) for c in cfg.logger.values()],
        max_epochs=1,
        val_check_interval=1,
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        # Clipping, like the optimizer, is done per member inside the batched step.
        gradient_clip_val=None,
        limit_train_batches=None,
        limit_val_batches=None,
        fast_dev_run=False,
        enable_checkpointing=False,
    )


def build_members(
    cfg: DictConfig, members: list[Member], images: Tensor, device: torch.device
) -> list[nn.Module]:
    """Each member's network as its standalone run builds it (torch seeded with its seed, then
    `cfg.model`), its input whitening fitted on its own training images, on `device`; members
    of one mode share one fit."""
    nets, fitted = [], {}
    for member in members:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member.seed)
            net = instantiate(cfg.model)
        if member.mode in fitted:
            for name, buffer in fitted[member.mode].named_buffers(recurse=False):
                net.get_buffer(name).copy_(buffer)
        else:
            own = images[member.start : member.start + member.size].to(device)
            net.fit_whitening(to_signed_unit(own))
            fitted[member.mode] = net
        nets.append(net)
    return nets


def adam_settings(cfg: DictConfig) -> tuple[AdamSettings, float]:
    """The configured optimizer's settings and base learning rate (validated: Adam or AdamW)."""
    optimizer = instantiate(cfg.optimizer)([torch.zeros(1, requires_grad=True)])
    d = optimizer.defaults
    settings = AdamSettings(
        betas=tuple(d["betas"]),
        eps=d["eps"],
        weight_decay=d["weight_decay"],
        decoupled=bool(d.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW))),
        max_grad_norm=cfg.trainer.get("gradient_clip_val"),
    )
    return settings, d["lr"]


def lr_table(cfg: DictConfig, schedule: MemberSchedule, base_lr: float) -> Tensor:
    """float64 (M, S): member m's learning rate at its own step k, as the LambdaLR of its
    standalone run gives it (`lr_schedule` built for that run's total steps)."""
    rows, by_total = [], {}
    for m in range(len(schedule.members)):
        total = schedule.total_steps(m)
        if total not in by_total:
            factor = lambda k: 1.0  # noqa: E731 (no schedule: the base rate throughout)
            if cfg.get("lr_schedule") is not None:
                optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
                factor = instantiate(cfg.lr_schedule)(optimizer, total).lr_lambdas[0]
            by_total[total] = [base_lr * factor(k) for k in range(total)]
        rows.append(by_total[total] + [0.0] * (schedule.num_steps - total))
    return torch.tensor(rows, dtype=torch.float64)


def load_data(cfg: DictConfig, modes: list[str]) -> ClassificationDataModule:
    """The real splits and, when a mode needs it, the generated set: the pool is the training
    set of mode `augmented` (real, then generated), or of mode `real`."""
    pool_mode = "real" if set(modes) == {"real"} else "augmented"
    datamodule = instantiate(cfg.datamodule, mode=pool_mode)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def build_module(
    cfg: DictConfig, data: ClassificationDataModule, schedule: MemberSchedule, device: torch.device
) -> EnsembleClassifierModule:
    """The stacked members (whitening fitted on `device`) with their optimizer and schedules."""
    members = list(schedule.members)
    nets = build_members(cfg, members, data.train_set.images, device)
    settings, base_lr = adam_settings(cfg)
    return EnsembleClassifierModule(
        MLPEnsemble(nets, keys=[member.seed for member in members]),
        schedule,
        data.train_set,
        data.val_set,
        data.test_set,
        lr_table(cfg, schedule, base_lr),
        settings,
        label_smoothing=cfg.label_smoothing,
        random_flip=data.random_flip,
        crop_padding=cfg.crop_padding,
        eval_batch_size=cfg.datamodule.eval_batch_size,
        compile=cfg.perf.compile,
        compile_mode=cfg.perf.compile_mode,
    )


def classify_ensemble(cfg: DictConfig, synthetic: str | None = None) -> dict[str, Any]:
    """Train every (mode, seed) of `cfg.modes` x `cfg.seeds` as one batched model, test each
    member once, write the outputs into `cfg.output_dir` and return the metrics.

    synthetic: the generated set (overrides `cfg.synthetic`); `cfg` itself is not changed.
    `wall_time_s` in the metrics counts data loading, whitening, training and testing.
    """
    cfg = copy.deepcopy(cfg)
    if synthetic is not None:
        with open_dict(cfg):
            cfg.synthetic = str(synthetic)
    modes, seeds = requested_members(cfg)
    validate_classify_config(cfg)
    validate_ensemble_config(cfg, modes, seeds)
    start = time.perf_counter()
    data = load_data(cfg, modes)
    ranges = {mode: mode_range(mode, data.n_real, data.n_generated) for mode in modes}
    members = tuple(Member(mode, seed, *ranges[mode]) for mode in modes for seed in seeds)
    schedule = MemberSchedule(members, cfg.batch_size, cfg.epochs)
    trainer = build_trainer(cfg)
    module = build_module(cfg, data, schedule, trainer.strategy.root_device)
    trainer.fit(module)
    trainer.test(module, verbose=False)
    info = {
        "wall_time_s": time.perf_counter() - start,
        "device": str(trainer.strategy.root_device),
        "model": str(cfg.model._target_),
        "n_real": data.n_real,
        "n_generated": data.n_generated,
        "synthetic": cfg.synthetic,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "batched_steps": schedule.num_steps,
    }
    results = module.results()
    metrics = ensemble_metrics(schedule, results, data.class_names, info)
    write_outputs(metrics, schedule, results, data.class_names, cfg.output_dir)
    for logger in trainer.loggers:
        if isinstance(logger, RunTensorBoardLogger):
            logger.close()
    accuracy = ", ".join(
        f"{m} {100 * s['test/acc_mean']:.2f} %" for m, s in metrics["modes"].items()
    )
    print_summary("classify", f"test/acc {accuracy} (mean of {len(seeds)} seed(s))", cfg.output_dir)
    return metrics
