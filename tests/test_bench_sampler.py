"""bench's whole-sampler cases: the configured sampler end to end, its FLOPs from its network
evaluations per image."""

from __future__ import annotations

import math

import pytest

from diffusion_lab.benchmarks.cases import CPU_CASES, DEFAULT_CASES, measure
from tests.conftest import TINY_TRAIN_OVERRIDES

DPM3 = ["sampler=dpmpp_2m", "sampler.steps=3", "sampler.guidance_interval=[10,19]"]


def test_the_whole_sampler_case_runs_the_configured_sampler_and_counts_its_flops():
    overrides = [*TINY_TRAIN_OVERRIDES, *DPM3]
    row = measure("sampler, fast eager", overrides, batch_size=2, steps=1, warmup=0)
    step = measure("sample fp32, batched", overrides, batch_size=2, steps=1, warmup=0)
    assert not row.error and row.images_per_s > 0 and math.isfinite(row.ms_per_step)
    # linspace visits 19, 13 and 6 at T=20; 19 and 13 are guided: 2 + 2 + 1 evaluations,
    # where one guided sampling step is 2.
    assert row.gflop_per_image == pytest.approx(step.gflop_per_image * 5 / 2)


def test_whole_sampler_cases_run_only_when_asked_for():
    assert not [case for case in DEFAULT_CASES + CPU_CASES if case.startswith("sampler,")]
