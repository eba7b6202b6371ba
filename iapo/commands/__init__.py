"""One module per subcommand, each with ``add_parser(subparsers)``; the parser's ``run``
default is the function that executes it."""

from __future__ import annotations

from types import ModuleType

from iapo.commands import demo, optimize, policy, report, serve, simulate

__all__ = ["COMMANDS"]

COMMANDS: tuple[ModuleType, ...] = (optimize, simulate, serve, policy, report, demo)
