"""``iapo report``: draw utility against N for the top prompts of each tier."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec

from iapo.commands._common import positive_int
from optimizer import estimates_path, load_estimates
from optimizer.svg import render_report
from policies.errors import PolicyError
from policies.policy import load_policy


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="draw utility against N per tier (SVG)",
        description="Draw estimated utility against N for the top prompts of each tier, so "
        "the 'deceiving prompt' effect can be seen. Reads POLICY.json and the "
        "POLICY.estimates.json that 'iapo optimize' writes beside it.",
    )
    parser.add_argument("policy", metavar="POLICY.json")
    parser.add_argument(
        "--out", metavar="REPORT.svg", help="picture to write (default: POLICY.svg)"
    )
    parser.add_argument(
        "--top", type=positive_int, default=4, help="prompts per tier (default %(default)s)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    try:
        estimates = load_estimates(args.policy)
    except FileNotFoundError:
        raise PolicyError(
            f"{estimates_path(args.policy)} not found; it is written by 'iapo optimize' "
            "beside the policy"
        ) from None
    except msgspec.DecodeError as exc:
        raise PolicyError(f"{estimates_path(args.policy)}: {exc}") from None
    out = Path(args.out) if args.out else Path(args.policy).with_suffix(".svg")
    out.write_text(render_report(estimates, top=args.top), encoding="utf-8")
    for name, choice in policy.tiers.items():
        print(
            f"{name}: prompt {choice.prompt.id} at N={choice.n}, "
            f"utility {choice.expected_utility:.4f}"
        )
    print(f"wrote {out}")
    return 0
