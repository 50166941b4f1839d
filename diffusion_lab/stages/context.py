"""What every stage of the study gets: the config, the folder, the budget, earlier results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from diffusion_lab.stages.budget import Budget
from diffusion_lab.stages.folder import StudyFolder

log = logging.getLogger("diffusion_lab.study")


@dataclass
class StageContext:
    """A study in progress; `notes` collects what the running stage shrank or left out."""

    cfg: DictConfig
    folder: StudyFolder
    budget: Budget
    device: torch.device
    notes: list[str] = field(default_factory=list)
    # Part 1's measured cost before training (seconds per step, steps per epoch), with a budget.
    probe: dict[str, float] | None = None

    def result(self, stage: str) -> dict[str, Any] | None:
        """An earlier stage's record (None where it did not run or was left out)."""
        record = self.folder.finished(stage)
        return None if record is None or record.get("skipped") else record

    def note(self, text: str) -> None:
        """Say what this stage shrinks or leaves out, now and in study.md."""
        log.warning(text)
        self.notes.append(text)
