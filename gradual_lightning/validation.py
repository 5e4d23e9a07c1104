"""Type checks of config values with errors that name the key: one API for every validated settings dataclass.

YAML and the command line give strings, ints, floats and bools; Python would happily take `flase` as a truthy
string or 2.5 as a count. `check_types(cls, values, group)` checks each dataclass field against its annotation and
`check_value(key, value, kind)` checks a single top-level key.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


class ConfigError(ValueError):
    """A config value of the wrong type or range; the message names the key."""


def _ok(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)
    if kind == "str":
        return isinstance(value, str)
    return True


def check_value(key: str, value: Any, kind: str, *, minimum: float | None = None, optional: bool = False) -> None:
    """`key`'s value is of `kind` (int, float, bool, str) and at least `minimum`; None only when `optional`."""
    if value is None and optional:
        return
    if not _ok(value, kind):
        raise ConfigError(f"{key}={value!r}: expected {_KINDS[kind]}{' or null' if optional else ''}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}={value!r}: must be >= {minimum}")


def _kind(annotation: Any) -> str | None:
    """'int', 'float', 'bool' or 'str' for a plain (optionally `X | None`) annotation; None for anything else."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if len(args) == 1 and args[0] in (int, float, bool, str):
        return args[0].__name__
    return None


def check_types(cls: type, values: Mapping[str, Any], group: str) -> None:
    """Every value of a plain-typed field of dataclass `cls` in `values` has the annotated type (errors name
    `group.field`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _kind(hints[f.name])
        if kind is not None and f.name in values:
            optional = type(None) in typing.get_args(hints[f.name])
            check_value(f"{group}.{f.name}", values[f.name], kind, optional=optional)


def check_keys(cls: type, values: Mapping[str, Any], group: str) -> None:
    """No key of `values` is unknown to dataclass `cls` (a typo fails, naming the group and the known keys)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{group}: unknown key(s) {unknown}; known keys: {sorted(names)}")
