"""The study folder: its config, which stages have finished, and what each recorded.

    <study dir>/study_config.yaml   the resolved config the folder was made with
    <study dir>/study_state.json    per finished stage: wall time, results, what was shrunk
    <study dir>/<stage>/            what the stage made (a train run, a generated set, ...)

A rerun of the same command reads the state and continues after the last finished stage. A
folder made with another config is refused with the keys that differ, unless forced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from diffusion_lab.utils.errors import ConfigError
from diffusion_lab.utils.files import atomic_path, write_json

CONFIG_FILE = "study_config.yaml"
STATE_FILE = "study_state.json"
# Keys that say how long or whether to reuse, not what is studied: a rerun may change them.
RUN_CONTROL_KEYS = ("budget_minutes", "study.force_config", "output_dir")


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: value}."""
    if not isinstance(node, dict):
        return {prefix: node}
    items: dict[str, Any] = {}
    for key, value in node.items():
        items.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return items


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ (or exist on one side only), run control excluded."""
    a, b = flat(old), flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))
    return [k for k in keys if not k.startswith(RUN_CONTROL_KEYS)]


class StudyFolder:
    """One study's folder; `config` is the resolved study config as a plain dict."""

    def __init__(self, root: str | Path, config: dict[str, Any]) -> None:
        self.root = Path(root)
        self.config = config

    def check(self, force: bool) -> None:
        """Refuse a folder made with another config (unless forced); reads only."""
        path = self.root / CONFIG_FILE
        if not path.is_file():
            return
        changed = differing_keys(OmegaConf.to_container(OmegaConf.load(path)), self.config)
        if changed and not force:
            shown = ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else "")
            raise ConfigError(
                f"study folder {self.root} was made with another config ({len(changed)} "
                f"keys differ: {shown}); rerun with the same settings to continue it, pick "
                "another study.name, or pass study.force_config=true to reuse it"
            )

    def save_config(self) -> None:
        """Record the config the folder's results come from."""
        with atomic_path(self.root / CONFIG_FILE) as tmp:
            tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(self.config)))

    def state(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        return json.loads(path.read_text()) if path.is_file() else {"stages": {}}

    def finished(self, stage: str) -> dict[str, Any] | None:
        """The record of `stage` if it finished, else None."""
        return self.state()["stages"].get(stage)

    def record(self, stage: str, record: dict[str, Any]) -> None:
        """Mark `stage` finished with `record` (atomically, with the others kept)."""
        state = self.state()
        state["stages"][stage] = record
        write_json(state, self.root / STATE_FILE)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)
