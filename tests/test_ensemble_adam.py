"""ensemble_adam_ against torch.optim.Adam / AdamW run on each member alone, step by step."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.lit.lr_schedules import warmup_cosine
from diffusion_lab.nets.ensemble_adam import AdamSettings, ensemble_adam_, member_grad_norms

SHAPES = ((4, 6), (6,), (3, 2, 2))
# Steps of each member's own schedule: member 1 stops early, member 2 later (then masked).
TOTALS = (12, 5, 9)


def reference_run(optimizer_cls, settings, lr, seed):
    """Per member: a torch optimizer, a warm-up + cosine LambdaLR of its own length, clipping by
    clip_grad_norm_; returns the parameters after every batched step and the gradients used."""
    gen = torch.Generator().manual_seed(seed)
    n = len(TOTALS)
    inits = [torch.randn(n, *s, generator=gen) for s in SHAPES]
    grads = [[torch.randn(n, *s, generator=gen) for s in SHAPES] for _ in range(max(TOTALS))]
    history = []
    for m, total in enumerate(TOTALS):
        params = [torch.nn.Parameter(p[m].clone()) for p in inits]
        opt = optimizer_cls(params, lr=lr, betas=settings.betas, eps=settings.eps)
        opt.param_groups[0]["weight_decay"] = settings.weight_decay
        schedule = warmup_cosine(opt, total, warmup_fraction=0.25, peak_factor=2.0)
        after = []
        for k in range(total):
            for p, g in zip(params, grads[k], strict=True):
                p.grad = g[m].clone()
            if settings.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            opt.step()
            schedule.step()
            after.append([p.detach().clone() for p in params])
        history.append(after)
    return inits, grads, history


def lr_table(lr):
    """Each member's learning rate per own step, as its LambdaLR gives it."""
    rows = []
    for total in TOTALS:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        schedule = warmup_cosine(opt, total, warmup_fraction=0.25, peak_factor=2.0)
        rows.append([lr * schedule.lr_lambdas[0](k) for k in range(total)] + [0.0] * (12 - total))
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize(
    ("optimizer_cls", "settings"),
    [
        (torch.optim.Adam, AdamSettings()),
        (torch.optim.Adam, AdamSettings(weight_decay=0.1, max_grad_norm=2.0)),
        (torch.optim.AdamW, AdamSettings(weight_decay=0.05, decoupled=True, max_grad_norm=1.0)),
        (torch.optim.AdamW, AdamSettings((0.8, 0.95), eps=1e-6, weight_decay=0.3, decoupled=True)),
    ],
)
def test_each_member_follows_its_own_torch_optimizer_step_by_step(optimizer_cls, settings):
    inits, grads, history = reference_run(optimizer_cls, settings, lr=0.05, seed=3)
    params = [p.clone() for p in inits]
    exp_avgs = [torch.zeros_like(p) for p in params]
    exp_avg_sqs = [torch.zeros_like(p) for p in params]
    steps = torch.zeros(len(TOTALS), dtype=torch.int64)
    table = lr_table(0.05)
    totals = torch.tensor(TOTALS)
    worst = 0.0
    for k in range(max(TOTALS)):
        active = k < totals
        lr = table[torch.arange(len(TOTALS)), steps.clamp(max=table.shape[1] - 1)]
        ensemble_adam_(params, grads[k], exp_avgs, exp_avg_sqs, steps, lr, active, settings)
        for m, total in enumerate(TOTALS):
            expected = history[m][min(k, total - 1)]  # a masked member keeps its last state
            for p, e in zip(params, expected, strict=True):
                worst = max(worst, float((p[m] - e).abs().max() / e.abs().max()))
    assert steps.tolist() == list(TOTALS)
    # The same float32 operations on the same values: identical without clipping (observed 0).
    # With clipping the norm's reduction order differs (one norm per member over dims 1..,
    # against torch's norm of each flattened tensor): observed up to 3.4e-8 relative.
    assert worst <= (1e-6 if settings.max_grad_norm is not None else 0.0), worst


def test_member_grad_norms_are_clip_grad_norms_total_norm_per_member():
    grads = [torch.randn(3, *s) for s in SHAPES]
    for m in range(3):
        expected = torch.nn.utils.get_total_norm([g[m] for g in grads])
        torch.testing.assert_close(member_grad_norms(grads)[m], expected)
