"""The whole loop in one process: simulate, optimise live, store, serve, send traffic, compare.

    report = await run_demo(DemoOptions(workdir=Path("iapo-demo")), reporter)

Both servers (the simulated upstream and the proxy) run under uvicorn in this event loop
on free loopback ports and are shut down, lifespans included, when the run ends or fails.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx
import msgspec
import numpy as np
import openai

from iapo.demo.optimizing import BASELINE_SUFFIX, OptimizedTask, optimize_task
from iapo.demo.oracle import ExactUtility, exact_utility
from iapo.demo.traffic import TierStats, ask_all, score_answers, summarize
from iapo.simulator import (
    Simulator,
    SimulatorStats,
    create_app,
    make_simulator,
    serve_in_background,
    upstream_spec,
    write_tasks,
)
from optimizer import DEFAULT_METHOD, SampleCache
from policies.store import SqlitePolicyStore
from policies.taskfile import DatasetRow
from proxy.app import create_app as create_proxy_app
from proxy.config import parse_config

__all__ = [
    "DemoOptions",
    "DemoReport",
    "NullReporter",
    "Reporter",
    "TaskSummary",
    "TierRow",
    "run_demo",
]

logger = logging.getLogger(__name__)

# Files of a previous run the demo replaces (never anything else in the work dir).
_STATE_FILES = ("samples.sqlite", "policies.sqlite", "requests.sqlite")


class DemoOptions(msgspec.Struct, frozen=True):
    """How big a demo to run; the defaults finish in well under 3 minutes on 2 cores."""

    workdir: str = "iapo-demo"
    replay: str | None = None
    budget: int = 3000
    requests: int = 300
    seed: int = 0
    concurrency: int = 16
    method: str = DEFAULT_METHOD
    latency_ms: float = 0.0


class TierRow(msgspec.Struct, frozen=True):
    """One tier of one task: the IAPO choice and the prompt-only choice, on the same requests."""

    task: str
    tier: str
    cost_weight: float
    prompt: str
    n: int
    iapo: TierStats
    baseline_prompt: str
    baseline: TierStats
    exact: ExactUtility


class TaskSummary(msgspec.Struct, frozen=True):
    task: str
    strategy: str
    budget: int
    spent: int
    method: str
    policy_file: str
    report_file: str
    prompts: dict[str, str]


class DemoReport(msgspec.Struct, frozen=True):
    """Everything the demo measured; also written to ``<workdir>/summary.json``."""

    tasks: list[TaskSummary]
    rows: list[TierRow]
    simulator_samples: int
    elapsed_s: float


class Reporter(Protocol):
    """Where the demo says what it is doing (the CLI draws it with rich)."""

    def stage(self, text: str) -> None: ...

    def bar(self, description: str, total: int) -> Callable[[int], None]: ...


class NullReporter:
    """Says nothing (tests)."""

    def stage(self, text: str) -> None:
        logger.info("%s", text)

    def bar(self, description: str, total: int) -> Callable[[int], None]:
        return lambda n: None


def _prepare(workdir: Path) -> None:
    """Make the work dir and remove the state files of a previous run."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in _STATE_FILES:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                (workdir / (name + suffix)).unlink()


def _traffic_rows(rows: list[DatasetRow], count: int, rng: np.random.Generator) -> list[DatasetRow]:
    """``count`` held-out questions: every question once per pass, in a shuffled order."""
    picked: list[DatasetRow] = []
    while len(picked) < count:
        picked.extend(rows[i] for i in rng.permutation(len(rows)))
    return picked[:count]


async def _optimize_all(
    simulator: Simulator, options: DemoOptions, sim_url: str, reporter: Reporter
) -> list[OptimizedTask]:
    workdir = Path(options.workdir)
    written = write_tasks(simulator, workdir / "tasks", sim_url)
    done = []
    async with await SampleCache.open(workdir / "samples.sqlite") as cache:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits) as client:
            for task in written:
                reporter.stage(f"optimising {task.spec.name} ({task.spec.strategy}) live over HTTP")
                done.append(
                    await optimize_task(
                        task,
                        workdir=workdir,
                        budget=options.budget,
                        seed=options.seed,
                        method=options.method,
                        cache=cache,
                        client=client,
                        progress=reporter.bar(f"optimize {task.spec.name}", options.budget),
                    )
                )
    async with await SqlitePolicyStore.open(workdir / "policies.sqlite") as store:
        for optimized in done:
            await store.put(optimized.result.policy)
            await store.put(optimized.baseline)
    return done


def _proxy_config(workdir: Path, sim_url: str, tasks: list[OptimizedTask]) -> dict[str, object]:
    upstream = msgspec.to_builtins(upstream_spec(sim_url))
    names = [t.spec.name for t in tasks] + [t.baseline.task for t in tasks]
    return {
        "upstreams": [upstream],
        "tasks": [{"name": name} for name in names],
        "server": {"host": "127.0.0.1", "port": 0, "drain_timeout_s": 5.0},
        "auth": {"disabled": True},  # loopback only, for the demo's own client
        "store": {"path": str(workdir / "policies.sqlite")},
        "request_log": {"path": str(workdir / "requests.sqlite")},
        "passthrough": False,
    }


async def _traffic(
    simulator: Simulator,
    tasks: list[OptimizedTask],
    options: DemoOptions,
    proxy_url: str,
    reporter: Reporter,
) -> list[TierRow]:
    rows: list[TierRow] = []
    rng = np.random.default_rng([options.seed, 3])
    async with (
        openai.AsyncOpenAI(
            base_url=proxy_url + "/v1", api_key="demo", max_retries=1, timeout=120.0
        ) as client,
        httpx.AsyncClient() as http,
    ):
        for task in tasks:
            spec = task.spec
            reporter.stage(f"sending {spec.name} traffic through the proxy (openai SDK)")
            questions = _traffic_rows(task.test_rows, options.requests, rng)
            tiers = spec.tiers
            advance = reporter.bar(f"requests {spec.name}", 2 * len(tiers) * len(questions))
            for tier in tiers:
                chosen = task.result.policy.tiers[tier.name]
                baseline = task.baseline.tiers[tier.name]
                stats: list[TierStats] = []
                for name in (spec.name, spec.name + BASELINE_SUFFIX):
                    answers = await ask_all(
                        client,
                        name,
                        tier.name,
                        questions,
                        concurrency=options.concurrency,
                        progress=advance,
                    )
                    quality = await score_answers(spec, tier, answers, http)
                    stats.append(summarize(answers, quality, tier.cost_weight))
                exact = exact_utility(
                    simulator,
                    spec,
                    tier,
                    (chosen.prompt.id, chosen.n),
                    (baseline.prompt.id, baseline.n),
                )
                rows.append(
                    TierRow(
                        task=spec.name,
                        tier=tier.name,
                        cost_weight=tier.cost_weight,
                        prompt=chosen.prompt.id,
                        n=chosen.n,
                        iapo=stats[0],
                        baseline_prompt=baseline.prompt.id,
                        baseline=stats[1],
                        exact=exact,
                    )
                )
    return rows


async def run_demo(options: DemoOptions, reporter: Reporter | None = None) -> DemoReport:
    """Run the whole loop; returns (and writes to the work dir) what it measured."""
    say = reporter or NullReporter()
    started = time.perf_counter()
    workdir = Path(options.workdir)
    _prepare(workdir)
    simulator = make_simulator(options.replay, rng=np.random.default_rng([options.seed, 1]))
    sim_stats = SimulatorStats()
    sim_app = create_app(
        simulator,
        latency_s=options.latency_ms / 1000.0,
        stats=sim_stats,
        rng=np.random.default_rng([options.seed, 2]),
    )
    say.stage("starting the simulated upstream")
    async with serve_in_background(sim_app) as sim_url:
        tasks = await _optimize_all(simulator, options, sim_url, say)
        say.stage("starting the proxy with the stored policies")
        config = parse_config(_proxy_config(workdir, sim_url, tasks), source="iapo demo", env={})
        proxy_app = create_proxy_app(config, rng=np.random.default_rng([options.seed, 4]), env={})
        async with serve_in_background(proxy_app) as proxy_url:
            rows = await _traffic(simulator, tasks, options, proxy_url, say)
        say.stage("stopped the proxy")
    say.stage("stopped the simulated upstream")
    report = DemoReport(
        tasks=[
            TaskSummary(
                task=t.spec.name,
                strategy=t.spec.strategy,
                budget=options.budget,
                spent=t.result.spent,
                method=options.method,
                policy_file=str(t.policy_file),
                report_file=str(t.report_file),
                prompts={p.id: p.text for p in t.spec.prompts},
            )
            for t in tasks
        ],
        rows=rows,
        simulator_samples=sim_stats.samples,
        elapsed_s=time.perf_counter() - started,
    )
    _write_summary(report, workdir / "summary.json")
    return report


def _write_summary(report: DemoReport, path: Path) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
