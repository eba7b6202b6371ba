"""Helpers shared by subcommands."""

from __future__ import annotations

import argparse
import sys

__all__ = ["not_built", "positive_int"]


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
