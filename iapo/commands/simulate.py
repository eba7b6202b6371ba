"""``iapo simulate``: an OpenAI-compatible upstream that answers from a recorded table."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from policies.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="serve a simulated OpenAI-compatible upstream from a table",
        description="Serve chat completions (and the reward contract) from a recorded-"
        "distribution table, so everything runs without an LLM. Without --replay it uses "
        "the built-in synthetic table. --write-task writes task files and JSONL datasets "
        "pointing at this server, for 'iapo optimize --task', and a proxy.toml for 'iapo serve'.",
    )
    parser.add_argument("--replay", metavar="TABLE.npz", help="table (default: built-in synthetic)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=None, help="synthetic tables and sampling")
    parser.add_argument(
        "--write-task", metavar="DIR", help="write <task>.toml and JSONL datasets into DIR"
    )
    parser.add_argument(
        "--write-only", action="store_true", help="with --write-task: write files and exit"
    )
    parser.add_argument(
        "--write-table", metavar="FILE.npz", help="also save the majority table (.npz)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="mean delay per chat response (default 0)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from iapo.simulator import (
        DEFAULT_SEED,
        create_app,
        make_simulator,
        save_table,
        write_proxy_config,
        write_tasks,
    )

    if args.write_only and not args.write_task:
        raise ConfigError("--write-only needs --write-task DIR")
    seed = DEFAULT_SEED if args.seed is None else args.seed
    simulator = make_simulator(args.replay, seed=seed)
    if args.write_table:
        save_table(simulator.majority, args.write_table)
        print(f"wrote {args.write_table}")
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says it is TCP; without it every keep-alive response waits ~40 ms
    # for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if not args.write_only:
            sock.bind((args.host, args.port))
        port = sock.getsockname()[1] if not args.write_only else args.port
    except OSError as exc:
        sock.close()
        print(
            f"iapo simulate: error: cannot listen on {args.host}:{args.port}: {exc.strerror}; "
            f"pick another port with --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    base_url = f"http://{args.host}:{port}"
    if args.write_task:
        tasks = write_tasks(simulator, Path(args.write_task), base_url)
        for task in tasks:
            print(
                f"wrote {task.task_file} ({task.spec.strategy}, {len(task.spec.prompts)} prompts)"
            )
        print(f"wrote {write_proxy_config(Path(args.write_task), base_url, tasks)}")
    if args.write_only:
        sock.close()
        return 0
    table = simulator.majority
    print(
        f"simulated upstream on {base_url}/v1 (model iapo-sim): majority table "
        f"{table.num_prompts} prompts × {table.questions('train')}+{table.questions('test')} "
        f"questions; reward endpoint {base_url}/v1/reward. Ctrl+C stops.",
        file=sys.stderr,
    )
    app = create_app(simulator, latency_s=args.latency_ms / 1000.0)
    config = uvicorn.Config(app, host=args.host, port=port, log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    return 0
