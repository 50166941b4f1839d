"""M classifiers of one architecture as one batched model (torch.func).

`MLPEnsemble` stacks the parameters and buffers of M independently built networks
(`torch.func.stack_module_state`) and runs them with `torch.func.functional_call` under `vmap`:
one input batch per member, x (M, B, *in_shape) -> logits (M, B, K), every linear layer one
batched matrix product. Each member keeps its own buffers (input whitening, batch-norm running
statistics); vmap applies batch norm's in-place running-statistics update to each member's
slice of the stacked buffers.

Randomness is keyed: dropout masks (and the caller's flips and crops) are a hash of (member key,
member step, stream, element index), not draws from a global generator. vmap's
randomness="different" would draw all members' masks as one tensor from torch's generator, so
member m's mask would depend on how many members there are and on its place among them; keyed,
a member's random numbers are the same whatever the other members are (no cross-talk), vmap
runs with its default randomness="error" (no hidden random op), and the step holds no
generator state, which keeps it free of host syncs and compilable.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2^31: the products of 32-bit values stay below 2^63 (no int64 overflow).
_MIX = 0x45D9F3B
_GOLDEN = 0x61C88647
# Keyed streams; dropout layer l uses DROPOUT_STREAM + l.
FLIP_STREAM, CROP_STREAM, DROPOUT_STREAM = 1, 2, 16


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (bijective on [0, 2^32)) in int64 arithmetic."""
    x = ((x >> 16) ^ x) * _MIX & _MASK32
    x = ((x >> 16) ^ x) * _MIX & _MASK32
    return (x >> 16) ^ x


def keyed_uniform(keys: Tensor, counters: Tensor, stream: int, shape: Sequence[int]) -> Tensor:
    """Floats in [0, 1) of shape (*keys.shape, *shape): each a function of its key, counter,
    `stream` and element index only, so member m draws the same numbers in any ensemble.

    keys, counters: int64 tensors of one shape, e.g. (M,) seeds and optimizer step counts.
    """
    head = _mix32(_mix32(_mix32(keys & _MASK32) ^ (counters & _MASK32)) ^ stream)[..., None]
    index = torch.arange(math.prod(shape), device=keys.device)
    bits = _mix32((_mix32(index ^ head) + (index * _GOLDEN & _MASK32)) & _MASK32)
    # The top 24 bits: every k / 2^24 is exact in float32.
    return ((bits >> 8).float() * 2.0**-24).view(*keys.shape, *shape)


class KeyedDropout(nn.Module):
    """Dropout (p) with the keep-mask drawn by `keyed_uniform` from the buffers `key` and
    `counter` (set per member by MLPEnsemble) and this layer's `stream`."""

    def __init__(self, p: float, stream: int) -> None:
        super().__init__()
        self.p, self.stream = p, stream
        self.register_buffer("key", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("counter", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        kept = keyed_uniform(self.key, self.counter, self.stream, x.shape) >= self.p
        # As F.dropout: the 0/1 mask divided by 1 - p, in the input's dtype, times the input.
        return x * (kept.to(x.dtype) / (1 - self.p))


def _flat(name: str) -> str:
    """A dotted state name as an attribute name (`layers.0.weight` -> `layers__0__weight`)."""
    return name.replace(".", "__")


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)


class MLPEnsemble(nn.Module):
    """M networks of one architecture, stacked: member m is `members[m]` with its weights,
    buffers and dropout key `keys[m]`.

    Args:
        members: networks built alike (same class and arguments, any initial weights); all
            their buffers are stacked, so each member keeps its own input whitening and
            batch-norm statistics.
        keys: one integer per member that keys its dropout masks (e.g. its seed).
    """

    def __init__(self, members: Sequence[nn.Module], keys: Sequence[int]) -> None:
        super().__init__()
        if not members or len(keys) != len(members):
            raise ValueError(f"keys={list(keys)}: need one key per member ({len(members)})")
        params, buffers = stack_module_state(list(members))
        self.param_names, self.buffer_names = tuple(params), tuple(buffers)
        for name, value in params.items():
            self.register_parameter(_flat(name), nn.Parameter(value.detach(), requires_grad=False))
        for name, value in buffers.items():
            self.register_buffer(_flat(name), value)
        self.register_buffer("keys", torch.tensor(list(keys), dtype=torch.int64))
        self.num_classes = getattr(members[0], "num_classes", None)
        template = copy.deepcopy(members[0])
        dropouts = [n for n, m in template.named_modules() if isinstance(m, nn.Dropout)]
        for stream, name in enumerate(dropouts, DROPOUT_STREAM):
            template.set_submodule(name, KeyedDropout(template.get_submodule(name).p, stream))
        self.dropout_names = tuple(dropouts)
        norms = {n for n, m in template.named_modules() if _is_batch_norm(m)}
        self.running_names = tuple(b for b in buffers if b.rsplit(".", 1)[0] in norms)
        # The architecture without storage (not a submodule): functional_call supplies the
        # tensors of one member at a time.
        self.__dict__["template"] = template.to("meta")

    @property
    def num_members(self) -> int:
        return len(self.keys)

    def params(self) -> dict[str, Tensor]:
        """The stacked parameters by their member names (`layers.0.weight`: (M, out, in))."""
        return {name: getattr(self, _flat(name)) for name in self.param_names}

    def stacked_buffers(self) -> dict[str, Tensor]:
        """The stacked buffers by their member names (`mean`: (M, in_features))."""
        return {name: getattr(self, _flat(name)) for name in self.buffer_names}

    def logits(
        self,
        params: dict[str, Tensor],
        x: Tensor,
        counters: Tensor | None = None,
        shared: bool = False,
        buffers: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Logits (M, B, K) of x (M, B, *in_shape), one batch per member; with `shared`, of
        x (B, *in_shape) for every member.

        params: stacked as `params()` returns them (or stand-ins of the same shapes, such as
        torch.func.grad's). In training mode, dropout draws its masks at each member's counter
        (int64 (M,), e.g. its step count), and batch norm updates every member's running
        statistics in place (see `keep_running_where`). buffers: `stacked_buffers()` (the
        default); under torch.func.grad pass them as an input of the transformed function, whose
        inputs alone it lets batch norm update in place.
        """
        buffers = dict(self.stacked_buffers() if buffers is None else buffers)
        if self.training and self.dropout_names:
            if counters is None:
                raise ValueError("counters=None: dropout in training mode needs one per member")
            for name in self.dropout_names:
                buffers |= {f"{name}.key": self.keys, f"{name}.counter": counters}
        self.template.train(self.training)

        def member(p: dict[str, Tensor], b: dict[str, Tensor], xm: Tensor) -> Tensor:
            return functional_call(self.template, (p, b), (xm,))

        return vmap(member, in_dims=(0, 0, None if shared else 0))(params, buffers, x)

    def forward(self, x: Tensor, counters: Tensor | None = None, shared: bool = False) -> Tensor:
        """`logits` with the ensemble's own parameters."""
        return self.logits(self.params(), x, counters, shared)

    def running_state(self) -> dict[str, Tensor]:
        """A copy of the buffers a training forward updates (batch-norm running statistics)."""
        return {name: getattr(self, _flat(name)).clone() for name in self.running_names}

    def keep_running_where(self, active: Tensor, before: dict[str, Tensor]) -> None:
        """Put back `before` (a `running_state`) for the members where the bool active (M,) is
        False: a masked member's statistics stay as they were."""
        for name, old in before.items():
            new = getattr(self, _flat(name))
            new.copy_(torch.where(active.view(-1, *[1] * (new.dim() - 1)), new, old))
