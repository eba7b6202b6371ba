"""``iapo simulate``: an OpenAI-compatible upstream that answers from a recorded table."""

from __future__ import annotations

import argparse
from typing import Any

from iapo.commands._common import not_built


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="serve a simulated OpenAI-compatible upstream from a table",
        description="Serve chat completions (and the reward contract) from a recorded-"
        "distribution table, so everything runs without an LLM.",
    )
    parser.add_argument("--replay", metavar="TABLE.npz", help="table (default: built-in synthetic)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return not_built("simulate", 4)
