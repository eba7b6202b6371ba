"""``python -m iapo.testing``: run the fault-injecting upstream on its own.

    python -m iapo.testing --port 0 --fault-rate 0.05 --latency-ms 30 --port-file up.port

Prints ``listening on URL`` once ready (and writes the port to ``--port-file``), serves
until SIGTERM/SIGINT, then prints its counters as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import msgspec
import numpy as np

from iapo.testing.plan import FAULT_HELP, FaultKind, FaultPlan, UnknownFault, parse_fault
from iapo.testing.upstream import FaultUpstream, ReceivedRequest


def _epilog() -> str:
    kinds = "\n".join(f"  {kind:<10} {text}" for kind, text in FAULT_HELP.items())
    return (
        f"fault kinds:\n{kinds}\n\n"
        "A request picks its own fault with [[fault:KIND]] in its messages or an x-fault: KIND "
        "header; an unknown kind is answered 400."
    )


def _script(text: str) -> tuple[FaultKind, ...]:
    try:
        return tuple(parse_fault(kind.strip()) for kind in text.split(",") if kind.strip())
    except UnknownFault as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iapo.testing",
        description=__doc__,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="write the bound port here once ready")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of faulty answers")
    parser.add_argument("--no-hangs", action="store_true", help="leave hangs and stalls out")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--spike-ms", type=float, default=2000.0)
    parser.add_argument("--hang-s", type=float, default=600.0)
    parser.add_argument(
        "--script",
        type=_script,
        default=(),
        metavar="KIND,KIND,...",
        help="faults for the first chat requests, in order (then the --fault-rate mix)",
    )
    parser.add_argument("--plan", type=Path, help="a FaultPlan as JSON (overrides the above)")
    parser.add_argument("--log", type=Path, help="append one JSON line per chat request here")
    return parser


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> FaultPlan:
    """The plan the flags describe; a bad --plan file is a usage error naming the field."""
    try:
        if args.plan is not None:
            return msgspec.json.decode(args.plan.read_bytes(), type=FaultPlan)
        return FaultPlan.uniform(
            args.fault_rate,
            include_hangs=not args.no_hangs,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            spike_ms=args.spike_ms,
            hang_s=args.hang_s,
            script=args.script,
        )
    except (OSError, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        parser.error(f"{args.plan or 'fault plan'}: {exc}")


async def _serve(args: argparse.Namespace, plan: FaultPlan) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log = args.log.open("a", encoding="utf-8", buffering=1) if args.log is not None else None

    def observe(request: ReceivedRequest) -> None:
        if log is not None:
            line = {
                "i": request.index,
                "fault": request.fault,
                "n": request.n,
                "choices": request.choices,
                "stream": request.stream,
                "tag": request.tag,
            }
            log.write(msgspec.json.encode(line).decode() + "\n")

    upstream = FaultUpstream(
        plan,
        rng=np.random.default_rng(args.seed),
        host=args.host,
        port=args.port,
        keep=100,
        observer=observe,
    )
    async with upstream:
        if args.port_file is not None:
            tmp = args.port_file.with_suffix(".tmp")
            tmp.write_text(str(upstream.port))
            tmp.replace(args.port_file)
        print(f"listening on {upstream.base_url}", flush=True)
        await stop.wait()
    if log is not None:
        log.close()
    stats = upstream.stats
    print(
        msgspec.json.encode(
            {
                "requests": stats.requests,
                "chat_requests": stats.chat_requests,
                "completed": stats.completed,
                "disconnected": stats.disconnected,
                "choices_served": stats.choices_served,
                "peak_in_flight": stats.peak_in_flight,
                "faults": dict(stats.faults),
            }
        ).decode(),
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    plan = _plan(args, parser)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args, plan))
    return 130


if __name__ == "__main__":
    sys.exit(main())
