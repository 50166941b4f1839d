"""What every entry point shares: the config folder and one-line reports of user errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from diffusion_lab.errors import UserFacingError

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

R = TypeVar("R")


def report_user_errors(task: Callable[..., R]) -> Callable[..., R]:
    """Turn a UserFacingError into `error: <message>` on stderr and exit status 2, no traceback."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        try:
            return task(*args, **kwargs)
        except UserFacingError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write JSON to a temporary name, then rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
