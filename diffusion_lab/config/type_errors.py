"""A value of the wrong type, as the one line of the other checks: `epochs='abc': must be an
integer`, the type read off the command's schema (`config/schema.py`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from omegaconf.errors import ValidationError

from diffusion_lab.config.schema import SCHEMAS, Switch
from diffusion_lab.utils.errors import ConfigError

# What a value of each type must be, in the words of the suite's other checks.
TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
}


def describe(hint: Any) -> str:
    """`int` -> "an integer", `Optional[list[int]]` -> "null or a list of integers"."""
    if hint == Switch:
        return "true, false or auto"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        nullable = type(None) in typing.get_args(hint)
        words = " or ".join(describe(a) for a in args)
        return f"null or {words}" if nullable else words
    if origin is list:
        return f"a list of {plural(args[0])}"
    if origin is dict:
        return f"a mapping to {plural(args[1])}"
    return TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def plural(hint: Any) -> str:
    """`int` -> "integers"."""
    return describe(hint).removeprefix("an ").removeprefix("a ") + "s"


def without_null(hint: Any) -> Any:
    """`Optional[X]` -> X."""
    if typing.get_origin(hint) is Union and type(None) in typing.get_args(hint):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def field_hint(schema: type, full_key: str) -> Any:
    """The annotation of `full_key` (`perf.compile`, `seeds[1]`, `weights.x`) in `schema`."""
    hint: Any = schema
    for part in full_key.replace("[", ".[").split("."):
        hint = without_null(hint)
        origin = typing.get_origin(hint)
        if origin in (list, dict):
            hint = typing.get_args(hint)[-1]
        elif dataclasses.is_dataclass(hint) and not part.startswith("["):
            hint = typing.get_type_hints(hint).get(part)
        else:
            return None
    return hint


def type_error(config_name: str, err: ValidationError) -> ConfigError:
    """OmegaConf's refusal of a value as `key=value: must be <type>` (the schema's type)."""
    key, value = err.full_key, getattr(err, "value", None)
    hint = field_hint(SCHEMAS[config_name], key) if config_name in SCHEMAS else None
    if hint is None:
        return ConfigError(f"{key}={value!r}: {err.msg.splitlines()[0]}")
    return ConfigError(f"{key}={value!r}: must be {describe(hint)}")
