"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from policies.errors import ConfigError

__all__ = ["checked_task_name", "not_built", "positive_int", "table_task_name"]

_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def not_built(name: str, issue: int) -> int:
    """Say plainly that a subcommand is not built yet (exit code 3)."""
    print(
        f"iapo {name}: not built yet (tracked in issue #{issue}); nothing was done.",
        file=sys.stderr,
    )
    return 3


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def table_task_name(path: str | Path) -> str:
    """The default task name of a replayed table: its file name, made a valid task name
    (``iapo optimize --replay`` and ``iapo simulate --replay`` agree on it)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).stem).lstrip("_.-") or "replay"
    return name[:64]


def checked_task_name(name: str) -> str:
    """``name`` if it is a valid task name, else ConfigError saying what one looks like."""
    if not _TASK_NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r}: a task name is 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name
