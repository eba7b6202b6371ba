"""``iapo demo``: the whole loop on one machine with no setup."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from iapo.commands._common import positive_int

QUICK_BUDGET = 1200
QUICK_REQUESTS = 40


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="simulate, optimize, serve and compare, all on this machine",
        description="Start a simulated upstream, optimize live against it, serve the policy "
        "through the proxy, send traffic per tier and print what each tier got, next to "
        "the prompt-only choice at N=1 on the same requests. Needs no network and no data.",
    )
    parser.add_argument("--replay", metavar="TABLE.npz", help="use a recorded table instead")
    parser.add_argument(
        "--budget", type=positive_int, help="samples to optimize with, per task (default 3000)"
    )
    parser.add_argument(
        "--requests", type=positive_int, help="requests per tier and column (default 300)"
    )
    parser.add_argument(
        "--workdir",
        default="iapo-demo",
        help="where files go (default: %(default)s); the demo replaces its own databases "
        "there (samples, policies, requests .sqlite) and nothing else",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--concurrency", type=positive_int, default=16, help="client requests in flight"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="simulated upstream delay per call"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small run (budget {QUICK_BUDGET}, {QUICK_REQUESTS} requests per tier)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from iapo.demo import DemoOptions, run_demo
    from iapo.demo.display import RichReporter, print_report

    defaults = DemoOptions()
    budget = args.budget or (QUICK_BUDGET if args.quick else defaults.budget)
    requests = args.requests or (QUICK_REQUESTS if args.quick else defaults.requests)
    options = DemoOptions(
        workdir=args.workdir,
        replay=args.replay,
        budget=budget,
        requests=requests,
        seed=args.seed,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
    )
    console = Console()
    with RichReporter(console) as reporter:
        report = asyncio.run(run_demo(options, reporter))
    print_report(console, report)
    return 0
