"""Progress of long waits in images, with an ETA: a bar on a terminal, log lines elsewhere.

Off a terminal (a job log, SLURM, `| tee`) tqdm's bar is hidden or a stream of carriage
returns; there the same counts go to the `diffusion_lab.utils.progress` logger (Hydra's job
log and stderr) at most every `LOG_EVERY_S` seconds, and once at the end.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sized
from typing import Any

from tqdm.auto import tqdm

from diffusion_lab.diffusion.samplers import Progress

log = logging.getLogger(__name__)
LOG_EVERY_S = 30.0
# Counts may be fractions of an image (a sampler step moves a batch a little), shown rounded.
BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]"
LOG_FORMAT = (
    "{desc}: {n:.0f}/{total:.0f} {unit} ({percentage:.0f} %), {elapsed} elapsed, ETA {remaining}"
)


class _LogLines:
    """A file for tqdm that sends each non-empty line to the progress logger."""

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            log.info(line)

    def flush(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "img", **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal; off one, log lines of the same counts every LOG_EVERY_S seconds."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, bar_format=BAR_FORMAT, **kwargs)
    # A log keeps its last line, and has no rows to place bars on (position moves the cursor).
    kwargs.pop("leave", None)
    kwargs.pop("position", None)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=_LogLines(),
        mininterval=LOG_EVERY_S,
        miniters=1,
        bar_format=LOG_FORMAT,
        **kwargs,
    )


def images_per_step(bar: tqdm, images: int) -> Progress:
    """A sampler's `progress` hook that moves `bar` by `images` over the sampler's steps."""

    def wrap(steps: Iterable[int]) -> Iterator[int]:
        share = images / len(steps) if isinstance(steps, Sized) and len(steps) else 0.0
        for step in steps:
            yield step
            bar.update(share)
        if not share:
            bar.update(images)

    return wrap
