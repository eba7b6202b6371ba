"""A small TOML writer for the shapes iapo's files use (no TOML writer in the stdlib)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]


def dumps(document: dict[str, Any]) -> str:
    """Top-level dicts become tables, lists of dicts arrays of tables, None keys are left out."""
    return _toml(document)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml(document: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the shapes task files use (no None: absent keys)."""
    lines: list[str] = []
    nested: list[str] = []
    for key, value in document.items():
        if value is None:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict) and prefix == "":
            nested.append(f"\n[{path}]\n" + _toml(value, f"{path}."))
        elif isinstance(value, list | tuple) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                nested.append(f"\n[[{path}]]\n" + _toml(item, f"{path}."))
        else:
            lines.append(f"{key} = {_value(_without_none(value))}")
    return "\n".join(lines) + ("\n" if lines else "") + "".join(nested)


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value
