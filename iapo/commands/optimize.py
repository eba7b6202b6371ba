"""``iapo optimize``: find the best (prompt, N) per tier and write a policy."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from iapo.commands._common import checked_task_name, positive_int, table_task_name
from optimizer import (
    DEFAULT_METHOD,
    METHODS,
    HttpSampler,
    OptimizationResult,
    RecordedTable,
    ReplaySampler,
    SampleCache,
    load_table,
    make_run,
    optimize,
    replay_task,
    save_estimates,
)
from optimizer.sampling import Sampler
from policies.errors import ConfigError
from policies.policy import SamplingSettings, TierPolicy, save_policy
from policies.taskfile import DatasetRow, TaskFile, load_dataset, load_task_file
from policies.tasks import TaskSpec
from policies.tiers import DEFAULT_TIERS, parse_tiers

DEFAULT_TIERS_TEXT = ",".join(f"{t.name}={t.cost_weight:g}" for t in DEFAULT_TIERS)


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "optimize",
        help="run PSST and write a policy",
        description="Find the best (prompt, N) for each budget tier under a fixed sampling "
        "budget (PSST) and write a policy. Use --replay for a recorded table, --task for a "
        "live OpenAI-compatible upstream.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--replay", metavar="TABLE.npz", help="recorded-distribution table")
    source.add_argument("--task", metavar="TASK_FILE", help="task file for a live upstream")
    parser.add_argument(
        "--budget", type=positive_int, required=True, help="samples to spend, at most"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--tiers",
        default=None,
        help="NAME=COST_WEIGHT[:OBJECTIVE=WEIGHT...],... e.g. "
        "economy=1,helpful=0.2:helpfulness=1:harmlessness=0.2 (objective weights for "
        f"Best-of-N; default: the task file's tiers, or {DEFAULT_TIERS_TEXT} with equal "
        "objective weights)",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="task name of a --replay run (default: the table's file name); use the same "
        "--name with 'iapo simulate --replay' to serve the policy against that table",
    )
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default=DEFAULT_METHOD,
        help="search method (default: %(default)s)",
    )
    parser.add_argument(
        "--n-max", type=positive_int, default=None, help="largest N (default: task's, or 32)"
    )
    parser.add_argument(
        "--cache",
        metavar="SAMPLES.sqlite",
        help="sample cache for --task runs (default: POLICY.samples.sqlite beside --out)",
    )
    parser.add_argument("--out", required=True, metavar="POLICY.json", help="policy file to write")
    parser.add_argument("--quiet", action="store_true", help="no plan, progress bar or table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Not a terminal (a log, a pipe): wide enough that the tables stay readable.
    width = None if sys.stdout.isatty() else 160
    console = Console(quiet=args.quiet, highlight=False, width=width)
    rng = np.random.default_rng(args.seed)
    if args.name is not None and not args.replay:
        raise ConfigError("--name is for --replay runs; a task file names its own task")
    if args.replay:
        table = load_table(args.replay)
        tiers = parse_tiers(args.tiers or DEFAULT_TIERS_TEXT)
        if isinstance(table, RecordedTable) and any(t.objective_weights for t in tiers):
            raise ConfigError(
                f"{args.replay} is a majority-vote table; objective weights in --tiers are "
                "for Best-of-N tables"
            )
        name = args.name or table_task_name(args.replay)
        task = replay_task(table, name=checked_task_name(name), tiers=tiers, n_max=args.n_max or 32)
        result = asyncio.run(
            _optimize(args, console, task, ReplaySampler(table, rng), rng, str(args.replay))
        )
    else:
        prepared = _prepare_live(args)
        try:
            result = asyncio.run(_live(args, console, rng, prepared))
        except _Terminated:
            print(
                f"iapo optimize: terminated; every sample answered so far is in "
                f"{prepared[4]}: run the same command again to resume without paying twice",
                file=sys.stderr,
            )
            return 128 + signal.SIGTERM
    save_policy(result.policy, args.out)
    sidecar = save_estimates(result.estimates, args.out)
    _print_tables(console, result)
    console.print(f"wrote {args.out} (estimates: {sidecar})")
    return 0


def _prepare_live(
    args: argparse.Namespace,
) -> tuple[TaskFile, TaskSpec, list[DatasetRow], str, Path]:
    """Task, dataset rows, run key and cache path of a --task run (blocking file reads)."""
    task_file, dataset_path = load_task_file(args.task)
    task = task_file.task
    if args.tiers:
        tiers = parse_tiers(args.tiers)
        names = [t.name for t in tiers]
        default = task.default_tier if task.default_tier in names else names[0]
        task = _replace(task, tiers=tiers, default_tier=default)
    if args.n_max:
        task = _replace(task, n_max=args.n_max)
    extractor = task.extractor if task.strategy == "majority" else None
    rows = load_dataset(dataset_path, extractor, limit=task_file.dataset.limit)
    # Same task file, dataset and seed: same keys, so a re-run reads what it paid for.
    run_key = hashlib.sha256(
        Path(args.task).read_bytes()
        + b"\x00"
        + dataset_path.read_bytes()
        + f"\x00{args.seed}".encode()
    ).hexdigest()[:32]
    cache_path = Path(args.cache) if args.cache else Path(args.out).with_suffix(".samples.sqlite")
    return task_file, task, rows, run_key, cache_path


async def _live(
    args: argparse.Namespace,
    console: Console,
    rng: np.random.Generator,
    prepared: tuple[TaskFile, TaskSpec, list[DatasetRow], str, Path],
) -> OptimizationResult:
    task_file, task, rows, run_key, cache_path = prepared
    cache = await SampleCache.open(cache_path)
    # SIGTERM (a scheduler stopping the job) cancels the run like Ctrl-C: calls in
    # flight are dropped, the cache is closed cleanly and the exit code says so.
    loop, main = asyncio.get_running_loop(), asyncio.current_task()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        if main is not None:
            main.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        limits = httpx.Limits(max_connections=task_file.upstream.max_concurrency)
        async with httpx.AsyncClient(limits=limits) as client:
            sampler = HttpSampler(
                task, task_file.upstream, rows, client=client, run_key=run_key, cache=cache
            )
            result = await _optimize(args, console, task, sampler, rng, str(args.task))
            # The temperature every sample was drawn at is part of the arms evaluated.
            sampling = SamplingSettings.of(task_file.upstream)
            result = msgspec.structs.replace(
                result, policy=msgspec.structs.replace(result.policy, sampling=sampling)
            )
            console.print(
                f"samples: {sampler.paid} newly paid, {sampler.cached} read from the cache "
                f"({cache_path}); tokens {sampler.prompt_tokens} prompt + "
                f"{sampler.completion_tokens} completion; cost {sampler.cost:.6g}"
            )
            if task.strategy == "best_of_n" and task.reward is not None:
                console.print(
                    f"rewards ({task.reward.url}): {sampler.scored} samples scored, "
                    f"{sampler.unscored} left unscored by the reward service"
                )
            return result
    except asyncio.CancelledError:
        if terminated:
            raise _Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await cache.close()


class _Terminated(Exception):
    """A live run stopped by SIGTERM."""


def _replace(task: TaskSpec, **changes: Any) -> TaskSpec:
    try:
        return msgspec.structs.replace(task, **changes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _optimize(
    args: argparse.Namespace,
    console: Console,
    task: TaskSpec,
    sampler: Sampler,
    rng: np.random.Generator,
    source: str,
) -> OptimizationResult:
    progress = Progress(
        TextColumn("sampling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=args.quiet,
    )
    bar = progress.add_task("sampling", total=None)

    def advance(n: int) -> None:
        progress.advance(bar, n)

    run_and_plan = make_run(task, sampler, args.budget, rng, method=args.method, progress=advance)
    plan = run_and_plan[1]
    for line in plan.describe():
        console.print(line)
    progress.update(bar, total=plan.samples)
    with progress:
        return await optimize(
            task,
            sampler,
            args.budget,
            rng,
            method=args.method,
            seed=args.seed,
            source=source,
            run=run_and_plan,
        )


def _fmt_arm(prompt: str, n: int, utility: float) -> str:
    return f"{prompt} @ N={n} ({utility:.4f})"


def _fmt_n(choice: TierPolicy) -> str:
    """N, and with a stopping rule the samples a request is expected to draw."""
    if choice.stop == "full" or choice.expected_samples is None:
        return str(choice.n)
    return f"{choice.n} ({choice.stop}: ~{choice.expected_samples:.1f})"


def _print_tables(console: Console, result: OptimizationResult) -> None:
    policy = result.policy
    console.print(
        f"spent {result.spent} of {result.plan.budget} samples ({result.cached} from the cache); "
        f"method {policy.method}"
    )
    table = Table(title=f"policy for task {policy.task!r}")
    for column in (
        "tier",
        "λ",
        "prompt",
        "N",
        "utility [95% interval]",
        "quality",
        "cost",
        "prompt-only would pick",
        "disjoint would pick",
    ):
        table.add_column(column)
    ids = list(result.estimates.utility[next(iter(result.estimates.utility))])
    for name, choice in policy.tiers.items():
        report = result.tiers[name]
        lo, hi = choice.interval
        po = report.prompt_only
        dj = report.disjoint
        table.add_row(
            name,
            f"{choice.cost_weight:g}",
            choice.prompt.id,
            _fmt_n(choice),
            f"{choice.expected_utility:.4f} [{lo:.4f}, {hi:.4f}]",
            "-" if choice.expected_quality is None else f"{choice.expected_quality:.4f}",
            f"{choice.expected_cost or 0.0:.4g}",
            "-" if po is None else _fmt_arm(ids[po.prompt], po.n, po.utility),
            "-" if dj is None else _fmt_arm(ids[dj.prompt], dj.n, dj.utility),
        )
    console.print(table)
    for name, report in result.tiers.items():
        rule = report.threshold
        if rule is None:
            continue
        if not rule.stops:
            console.print(
                f"tier {name}: stop = threshold does not beat fixed N={rule.n} on the "
                f"{rule.queries} sampled queries; it never stops early"
            )
            continue
        console.print(
            f"tier {name}: stop at a reward ≥ {rule.threshold:.4g} or N={rule.n}, "
            f"{rule.expected_samples:.2f} samples a request; on the {rule.queries} sampled "
            f"queries utility {rule.utility:.4f} vs {rule.fixed_utility:.4f} at fixed "
            f"N={report.chosen.n} (the pooled closed form t*={rule.pooled_threshold:.4g}: "
            f"{rule.pooled_utility:.4f})"
        )
