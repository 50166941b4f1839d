"""Short measurements that let a stage estimate its cost before it starts.

Each times a few eager passes of the real network on this machine; compiled runs are faster,
so the estimates err on the safe side.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from diffusion_lab.data.members import Member, MemberSchedule, mode_range
from diffusion_lab.jobs.ensemble import build_module, load_data, requested_members
from diffusion_lab.runs.trained_run import TrainedRun
from diffusion_lab.scoring.features import feature_batch_size, load_features, resolve_device

TIMED_PASSES = 2


def _seconds_per_call(call: Callable[[], object], device: torch.device) -> float:
    """Seconds per call, after one untimed call."""
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(TIMED_PASSES):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / TIMED_PASSES


def network_evals_per_s(ckpt: str, batch: int, device: torch.device) -> float:
    """Images per second through one forward pass of a trained run's network."""
    run = TrainedRun.load(ckpt, map_location=device).to(device)
    net = run.module.net
    x = torch.randn(batch, *run.spec.shape, device=device)
    t = torch.randint(0, run.module.schedule.T, (batch,), device=device)
    labels = torch.randint(0, run.spec.num_classes, (batch,), device=device)
    with torch.no_grad():
        seconds = _seconds_per_call(lambda: net(x, t, labels), device)
    return batch / seconds


def feature_images_per_s(evaluate_cfg: DictConfig) -> float:
    """Images per second through the configured feature network (resize included)."""
    device = resolve_device(evaluate_cfg.device)
    network = load_features(evaluate_cfg, device)
    batch = feature_batch_size(evaluate_cfg.features, device)
    shape = (batch, evaluate_cfg.data.channels, evaluate_cfg.img_size, evaluate_cfg.img_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    return batch / _seconds_per_call(lambda: network.extractor(images), device)


def ensemble_epoch_seconds(classify_cfg: DictConfig, device: torch.device) -> float:
    """Seconds per epoch of the batched classifier stage: its longest member's steps per epoch
    (every step advances all members) times a timed batched step."""
    modes, seeds = requested_members(classify_cfg)
    data = load_data(classify_cfg, modes)
    ranges = {mode: mode_range(mode, data.n_real, data.n_generated) for mode in modes}
    members = tuple(Member(mode, seed, *ranges[mode]) for mode in modes for seed in seeds)
    schedule = MemberSchedule(members, classify_cfg.batch_size, 1)
    module = build_module(classify_cfg, data, schedule, device).to(device)
    module.start_segment(0)
    return schedule.num_steps * _seconds_per_call(module.batched_step, device)
