"""``iapo simulate``: an OpenAI-compatible upstream that answers from a recorded table."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn

from iapo.commands._common import checked_task_name, positive_int, table_task_name
from policies.errors import ConfigError
from policies.table import AnyTable


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="serve a simulated OpenAI-compatible upstream from a table",
        description="Serve chat completions (and the reward contract) from a recorded-"
        "distribution table, so everything runs without an LLM. Without --replay it uses "
        "the built-in synthetic tables. --write-task writes task files and JSONL datasets "
        "pointing at this server, for 'iapo optimize --task', and a proxy.toml for 'iapo "
        "serve'. --generate writes a synthetic table of any shape and exits.",
    )
    parser.add_argument(
        "--replay",
        metavar="TABLE.npz",
        help="a majority or Best-of-N table (default: built-in synthetic)",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="task name of the --replay table in --write-task files (default: the table's "
        "file name, as 'iapo optimize --replay' names it)",
    )
    generate = parser.add_argument_group("generating a table (--generate KIND --out FILE.npz)")
    generate.add_argument(
        "--generate",
        choices=("majority", "bon"),
        help="write a synthetic table: majority vote (prompts whose N=1 and large-N rankings "
        "differ) or the paper's categorical Best-of-N environment, then exit",
    )
    generate.add_argument("--out", metavar="FILE.npz", help="where --generate writes the table")
    generate.add_argument("--prompts", type=positive_int, default=8, help="default 8")
    generate.add_argument("--queries", type=positive_int, default=200, help="default 200")
    generate.add_argument(
        "--test-queries", type=int, default=0, help="held-out queries (default 0)"
    )
    generate.add_argument(
        "--outcomes", type=positive_int, default=6, help="bon: outcomes per cell (default 6)"
    )
    generate.add_argument(
        "--objectives", type=positive_int, default=2, help="bon: objectives (default 2)"
    )
    generate.add_argument(
        "--categories", type=int, default=5, help="majority: answer categories (default 5)"
    )
    generate.add_argument(
        "--skill-spread",
        type=float,
        default=0.2,
        help="majority: how far apart the prompts' skills are (logit sd, default 0.2)",
    )
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

    if args.generate:
        return _generate(args)
    if args.write_only and not args.write_task:
        raise ConfigError("--write-only needs --write-task DIR")
    if args.name is not None and not args.replay:
        raise ConfigError("--name names the task of a --replay table")
    seed = DEFAULT_SEED if args.seed is None else args.seed
    simulator = make_simulator(args.replay, seed=seed)
    replay_name = None
    if args.replay:
        replay_name = checked_task_name(args.name or table_task_name(args.replay))
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
        tasks = write_tasks(simulator, Path(args.write_task), base_url, replay_name=replay_name)
        for task in tasks:
            print(
                f"wrote {task.task_file} ({task.spec.strategy}, {len(task.spec.prompts)} prompts)"
            )
        source = None
        if replay_name is not None:
            # serve the replayed table's task alone: its policy comes from optimize --replay
            tasks = [t for t in tasks if t.spec.name == replay_name]
            source = (str(Path(args.replay).resolve()), replay_name)
        proxy = write_proxy_config(Path(args.write_task), base_url, tasks, replayed=source)
        print(f"wrote {proxy}")
    if args.write_only:
        sock.close()
        return 0
    table = simulator.majority
    reward = simulator.reward
    rewards = (
        ""
        if reward is None
        else f", Best-of-N {reward.num_prompts} prompts × {reward.questions('train')}+"
        f"{reward.questions('test')} requests on {', '.join(reward.objectives)}"
    )
    replayed = "" if replay_name is None else f"; task {replay_name!r} is {args.replay}"
    print(
        f"simulated upstream on {base_url}/v1 (model iapo-sim): majority "
        f"{table.num_prompts} prompts × {table.questions('train')}+{table.questions('test')} "
        f"questions{rewards}{replayed}; reward endpoint {base_url}/v1/reward. Ctrl+C stops.",
        file=sys.stderr,
    )
    app = create_app(simulator, latency_s=args.latency_ms / 1000.0)
    config = uvicorn.Config(app, host=args.host, port=port, log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from iapo.simulator import save_table
    from iapo.simulator.generate import categorical_bon_table, majority_table

    if not args.out:
        raise ConfigError("--generate needs --out FILE.npz")
    if args.replay or args.write_task:
        raise ConfigError("--generate writes a table and exits; drop --replay/--write-task")
    seed = 0 if args.seed is None else args.seed
    table: AnyTable
    if args.generate == "bon":
        table = categorical_bon_table(
            seed,
            prompts=args.prompts,
            queries=args.queries,
            outcomes=args.outcomes,
            objectives=args.objectives,
            test_queries=args.test_queries,
        )
        shape = f"Best-of-N table {table.bon_outcomes.shape} on {', '.join(table.objectives)}"
    else:
        table = majority_table(
            seed,
            prompts=args.prompts,
            queries=args.queries,
            categories=args.categories,
            test_queries=args.test_queries,
            skill_spread=args.skill_spread,
        )
        shape = f"majority table {table.cat_probs.shape}"
    save_table(table, args.out)
    print(f"wrote {args.out}: {shape}, {args.test_queries} held-out queries, seed {seed}")
    return 0
