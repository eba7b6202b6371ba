"""``iapo``: optimize, simulate, serve, policy, report, demo.

Each subcommand lives in ``iapo/commands/<name>.py`` with ``add_parser`` and ``run``.
Exit codes: 0 done, 1 a runtime failure, 2 a usage error (bad flags, or a config,
task, policy file or revision that is refused), 3 an upstream that cannot be reached,
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from iapo.commands import COMMANDS
from policies.errors import (
    ConfigError,
    IapoError,
    PolicyError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["EXIT_RUNTIME", "EXIT_UNREACHABLE", "EXIT_USAGE", "build_parser", "exit_code", "main"]

EXIT_RUNTIME = 1
EXIT_USAGE = 2  # also what argparse exits with for bad flags
EXIT_UNREACHABLE = 3


def exit_code(error: BaseException) -> int:
    """The exit code for an error that ends a command."""
    cause: BaseException | None = error
    while cause is not None:  # a SamplingError wraps the upstream failure that caused it
        if isinstance(cause, UpstreamUnavailable | UpstreamTimeout):
            return EXIT_UNREACHABLE
        cause = cause.__cause__
    if isinstance(error, ConfigError | PolicyError):
        return EXIT_USAGE
    return EXIT_RUNTIME


def _version() -> str:
    try:
        return metadata.version("iapo")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iapo",
        description="Inference-aware prompt optimization, served: find the best (prompt, N) "
        "per budget tier offline, then apply it to live OpenAI-compatible traffic.",
    )
    parser.add_argument("--version", action="version", version=f"iapo {_version()}")
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
        return exit_code(exc)
    except OSError as exc:  # a file that cannot be read or written, a port in use
        print(f"iapo {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print(f"iapo {args.command}: interrupted", file=sys.stderr)
        return 130
