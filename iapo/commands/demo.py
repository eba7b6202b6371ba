"""``iapo demo``: the whole loop on one machine with no setup."""

from __future__ import annotations

import argparse
from typing import Any

from iapo.commands._common import not_built


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="simulate, optimize, serve and compare, all on this machine",
        description="Start a simulated upstream, optimize live against it, serve the policy "
        "through the proxy, send traffic per tier and print what each tier got.",
    )
    parser.add_argument("--replay", metavar="TABLE.npz", help="use a recorded table instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return not_built("demo", 4)
