"""The members of a batched classifier run: their training sets and their step schedules.

All members draw from one pool of training images, the real ones followed by the generated
ones, which is how `ClassificationDataModule` concatenates them in mode `augmented`. Every
mode's training set is then one contiguous range of the pool:

    real: [0, n_real)    augmented: [0, n_real + n_generated)    synthetic: [n_real, ...)

Member m trains on its range as a standalone run of its mode and seed would: `size // batch_size`
batches per epoch (the last partial batch dropped), in the order `epoch_order(size, seed,
epoch)`. All members step together from batched step 0; member m takes its own step s at batched
step s and is masked from its last step on. A segment is a run of batched steps in which no
member starts or ends an epoch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from diffusion_lab.utils.errors import DataError


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of range(n) that a standalone run's EpochShuffle (data/modules.py) takes
    for (seed, epoch) on one process; tests/test_classify_ensemble.py checks that they agree."""
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(state))


@dataclass(frozen=True)
class Member:
    """One (mode, seed) pair: its training set is pool[start : start + size]."""

    mode: str
    seed: int
    start: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.mode}_seed{self.seed}"


def mode_range(mode: str, n_real: int, n_generated: int) -> tuple[int, int]:
    """(start, size) of a mode's training set in the pool (real images first)."""
    ranges = {
        "real": (0, n_real),
        "augmented": (0, n_real + n_generated),
        "synthetic": (n_real, n_generated),
    }
    return ranges[mode]


@dataclass(frozen=True)
class MemberSchedule:
    """When each member steps, starts and ends its epochs, in batched steps."""

    members: tuple[Member, ...]
    batch_size: int
    epochs: int

    def __post_init__(self) -> None:
        for member in self.members:
            if member.size < self.batch_size:
                raise DataError(
                    f"batch_size={self.batch_size}: larger than the {member.size} training "
                    f"images of mode {member.mode}"
                )

    def steps_per_epoch(self, m: int) -> int:
        return self.members[m].size // self.batch_size

    def total_steps(self, m: int) -> int:
        return self.epochs * self.steps_per_epoch(m)

    @cached_property
    def num_steps(self) -> int:
        """Batched steps in all: the longest member's own steps."""
        return max(self.total_steps(m) for m in range(len(self.members)))

    @cached_property
    def segments(self) -> list[tuple[int, int]]:
        """[start, stop) of every segment, in order; each stop ends some member's epoch."""
        stops = {
            k * self.steps_per_epoch(m)
            for m in range(len(self.members))
            for k in range(1, self.epochs + 1)
        }
        bounds = [0, *sorted(stops)]
        return list(itertools.pairwise(bounds))

    def active(self, step: int) -> list[bool]:
        """Per member: whether its schedule has a step at batched step `step`."""
        return [step < self.total_steps(m) for m in range(len(self.members))]

    def positions(self, step: int) -> list[int]:
        """Per member: the index of its batch within its epoch at batched step `step`."""
        return [step % self.steps_per_epoch(m) for m in range(len(self.members))]

    def epochs_starting(self, step: int) -> list[tuple[int, int]]:
        """(member, 0-based epoch) of the members whose epoch starts at batched step `step`."""
        return [
            (m, step // self.steps_per_epoch(m))
            for m in range(len(self.members))
            if step < self.total_steps(m) and step % self.steps_per_epoch(m) == 0
        ]

    def epochs_ending(self, stop: int) -> list[tuple[int, int]]:
        """(member, 0-based epoch) of the members whose epoch ends just before step `stop`."""
        return [
            (m, stop // self.steps_per_epoch(m) - 1)
            for m in range(len(self.members))
            if 0 < stop <= self.total_steps(m) and stop % self.steps_per_epoch(m) == 0
        ]
