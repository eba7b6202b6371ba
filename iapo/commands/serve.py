"""``iapo serve``: the OpenAI-compatible proxy."""

from __future__ import annotations

import argparse
from typing import Any

from iapo.commands._common import not_built


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible proxy",
        description="Serve /v1/chat/completions, applying each task's policy per budget tier.",
    )
    parser.add_argument("--config", metavar="FILE", help="proxy config file (TOML)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return not_built("serve", 6)
