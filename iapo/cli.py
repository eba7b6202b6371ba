"""``iapo``: optimize, simulate, serve, report, demo.

Each subcommand lives in ``iapo/commands/<name>.py`` with ``add_parser`` and ``run``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from iapo.commands import COMMANDS
from policies.errors import IapoError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iapo",
        description="Inference-aware prompt optimization, served: find the best (prompt, N) "
        "per budget tier offline, then apply it to live OpenAI-compatible traffic.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except IapoError as exc:
        print(f"iapo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iapo {args.command}: interrupted", file=sys.stderr)
        return 130
