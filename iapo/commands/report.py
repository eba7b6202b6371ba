"""``iapo report``: draw utility against N for the top prompts of each tier."""

from __future__ import annotations

import argparse
from typing import Any

from iapo.commands._common import not_built


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="draw utility against N per tier (SVG)",
        description="Draw estimated utility against N for the top prompts of each tier, so "
        "the 'deceiving prompt' effect can be seen.",
    )
    parser.add_argument("policy", metavar="POLICY.json")
    parser.add_argument("--out", metavar="REPORT.svg", help="picture to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return not_built("report", 3)
