"""``iapo optimize``: find the best (prompt, N) per tier and write a policy."""

from __future__ import annotations

import argparse
from typing import Any

from iapo.commands._common import not_built, positive_int


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "optimize",
        help="run PSST and write a policy",
        description="Find the best (prompt, N) for each budget tier under a fixed sampling "
        "budget (PSST) and write a policy. Use --replay for a recorded table, --task for a "
        "live OpenAI-compatible upstream.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--replay", metavar="TABLE.npz", help="recorded-distribution table")
    source.add_argument("--task", metavar="TASK_FILE", help="task file for a live upstream")
    parser.add_argument(
        "--budget", type=positive_int, required=True, help="samples to spend, at most"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--tiers",
        default="economy=1.0,standard=0.2,premium=0",
        help="NAME=COST_WEIGHT,... (default: %(default)s)",
    )
    parser.add_argument("--out", required=True, metavar="POLICY.json", help="policy file to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return not_built("optimize", 3)
