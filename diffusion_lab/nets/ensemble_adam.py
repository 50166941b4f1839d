"""Adam and AdamW for stacked ensemble members: one step count, learning rate and gradient-norm
clip per member, and a mask that leaves a member untouched.

torch.optim.Adam keeps one step count per tensor, so members of different schedules cannot share
it. `ensemble_adam_` is the update of torch.optim's single-tensor Adam (Kingma & Ba 2015, Alg. 1;
AdamW's decoupled weight decay, Loshchilov & Hutter 2019), written over stacked tensors whose
dim 0 is the member: the same operations in the same order, with the per-step scalars (bias
corrections, step size) computed in float64 per member, as torch computes them in Python floats.
Everything stays on the tensors' device: no host sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AdamSettings:
    """The hyper-parameters shared by all members (torch.optim.Adam's names).

    decoupled: AdamW's weight decay (param *= 1 - lr * weight_decay) instead of Adam's L2 term.
    max_grad_norm: clip each member's gradient to this L2 norm over all its tensors, as
        torch.nn.utils.clip_grad_norm_ does for one model (None: no clipping).
    """

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    max_grad_norm: float | None = None


def per_member(values: Tensor, like: Tensor) -> Tensor:
    """values (M,) shaped to broadcast against a stacked tensor `like` (M, ...)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def member_grad_norms(grads: Sequence[Tensor]) -> Tensor:
    """(M,): each member's gradient L2 norm over all its tensors (clip_grad_norm_'s total norm:
    the norm of the per-tensor norms)."""
    norms = [torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms), dim=0)


def clip_member_grads(grads: Sequence[Tensor], max_norm: float) -> list[Tensor]:
    """Each member's gradients scaled by min(1, max_norm / (its norm + 1e-6)), as
    torch.nn.utils.clip_grad_norm_ scales one model's."""
    coef = torch.clamp(max_norm / (member_grad_norms(grads) + 1e-6), max=1.0)
    return [g * per_member(coef, g) for g in grads]


def ensemble_adam_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    steps: Tensor,
    lr: Tensor,
    active: Tensor,
    settings: AdamSettings,
) -> None:
    """One optimizer step of every active member, in place.

    params, grads, exp_avgs, exp_avg_sqs: stacked tensors (M, ...), state initialised to zeros.
    steps: int64 (M,), the steps each member has taken (incremented where active).
    lr: float64 (M,), each member's learning rate for this step (from its own schedule).
    active: bool (M,); an inactive member's parameters, moments and step count do not change.
    """
    if settings.max_grad_norm is not None:
        grads = clip_member_grads(grads, settings.max_grad_norm)
    beta1, beta2 = settings.betas
    step = (steps + 1).double()
    # torch: bias_correction = 1 - beta ** step and step_size = lr / bias_correction1, as Python
    # floats; each enters its kernel as a float32 scalar.
    step_size = (lr / (1 - beta1**step)).float()
    bias_correction2_sqrt = (1 - beta2**step).sqrt().float()
    decay = (1 - lr * settings.weight_decay).float()
    for param, grad, exp_avg, exp_avg_sq in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        on = per_member(active, param)
        p = param
        if settings.weight_decay != 0:
            if settings.decoupled:
                p = param * per_member(decay, param)
            else:
                grad = grad.add(param, alpha=settings.weight_decay)
        m = torch.lerp(exp_avg, grad, 1 - beta1)
        v = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
        denom = (v.sqrt() / per_member(bias_correction2_sqrt, v)).add_(settings.eps)
        p = p + (-per_member(step_size, m) * m) / denom
        param.copy_(torch.where(on, p, param))
        exp_avg.copy_(torch.where(on, m, exp_avg))
        exp_avg_sq.copy_(torch.where(on, v, exp_avg_sq))
    steps.add_(active.long())
