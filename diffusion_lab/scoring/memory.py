"""The host memory `evaluate` will need, estimated before any image is sampled or any feature
computed, against what is available: a request that cannot fit is refused in one line.

The estimate counts the arrays evaluate keeps (generated images and labels, the feature
vectors of both sets), the largest temporaries of its metrics (the KID kernel matrices, the
chunked distance matrices, FID's covariances) and one feature batch. The networks' own
activations are not counted: the estimate is low rather than high, so what it refuses cannot
fit in the memory available now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from diffusion_lab.quality.neighbours import CHUNK_ELEMENTS
from diffusion_lab.scoring.features import feature_batch_size, resolve_device
from diffusion_lab.utils.errors import DataError
from diffusion_lab.utils.files import human_bytes

FLOAT32, FLOAT64, INT64 = 4, 8, 8
# cgroup (container) limits and usage: v2, then v1.
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


@dataclass(frozen=True)
class EvaluationSize:
    """What sizes evaluate's memory: image counts (those still to sample) and shape, feature
    and KID sizes."""

    num_generated: int
    to_sample: int
    num_reference: int
    channels: int
    img_size: int
    feature_dim: int
    feature_batch: int
    feature_input: int
    kid_subset: int

    def bytes_needed(self) -> int:
        """Bytes evaluate allocates from here on, about (see the module docstring)."""
        n, r, d = self.num_generated, self.num_reference, self.feature_dim
        # The images still to sample and their labels; sampled batches are joined into one
        # tensor, so the batches and the joined copy exist together for a moment.
        s = self.to_sample
        images = 2 * s * self.channels * self.img_size**2 + s * INT64
        # Features of both sets; the generated ones are joined from batches as well, and
        # precision/recall takes a real subset as large as the generated set.
        features = (r + 3 * n) * d * FLOAT32
        m = min(self.kid_subset, n, r)
        kid = 3 * m * m * FLOAT64 + 2 * m * d * FLOAT64
        # Two chunked distance matrices, FID's covariances with the matrix square root's work.
        work = 2 * CHUNK_ELEMENTS * FLOAT32 + 6 * d * d * FLOAT64
        batch = 3 * self.feature_batch * 3 * self.feature_input**2 * FLOAT32
        return images + features + kid + work + batch


def read_int(path: str) -> int | None:
    """The integer in a one-line system file (None: absent, unreadable or `max`)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def available_memory() -> int | None:
    """Bytes this process may still allocate, about: the kernel's MemAvailable, lowered to a
    container's limit less its usage; None where neither is known (no /proc)."""
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        available = next(int(line.split()[1]) * 1024 for line in meminfo if "MemAvailable" in line)
    except (OSError, StopIteration, ValueError):
        available = None
    for limit_file, usage_file in CGROUP_FILES:
        limit, usage = read_int(limit_file), read_int(usage_file)
        if limit is not None and usage is not None:
            room = max(limit - usage, 0)
            available = room if available is None else min(available, room)
    return available


def check_memory(size: EvaluationSize, key: str, value: object) -> None:
    """DataError, naming `key=value` (what decides the generated count) and the numbers, when
    `size` needs more memory than is available."""
    needed, available = size.bytes_needed(), available_memory()
    if available is None or needed <= available:
        return
    raise DataError(
        f"{key}={value}: evaluate needs about {human_bytes(needed)} of memory "
        f"({size.num_generated} generated and {size.num_reference} reference images of "
        f"{size.channels}x{size.img_size}x{size.img_size}, their {size.feature_dim}-d "
        f"features, KID subsets of {min(size.kid_subset, size.num_generated)}) but only "
        f"{human_bytes(available)} is available; lower per_class (or reference.per_class, "
        f"kid.subset_size), or run on a machine with more memory"
    )


def check_evaluate_memory(cfg: DictConfig, per_class: int, num_reference: int) -> None:
    """check_memory for an evaluate config with `per_class` generated images of each class
    (sampled from ckpt=, or already read from set=) and `num_reference` real images."""
    sampled = cfg.set is None
    num_generated = per_class * cfg.data.num_classes
    size = EvaluationSize(
        num_generated=num_generated,
        to_sample=num_generated if sampled else 0,
        num_reference=num_reference,
        channels=cfg.data.channels,
        img_size=cfg.img_size,
        feature_dim=cfg.features.dim,
        feature_batch=feature_batch_size(cfg.features, resolve_device(cfg.device)),
        feature_input=cfg.features.input_size,
        kid_subset=cfg.kid.subset_size,
    )
    check_memory(size, *(("per_class", per_class) if sampled else ("set", cfg.set)))
