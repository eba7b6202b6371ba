"""Sequential Best-of-N on ``assist``: realised utility of the threshold rule against fixed N.

    .venv/bin/python bench/cost_assist.py                       # B=1000, seeds 300-309
    .venv/bin/python bench/cost_assist.py --budget 3000 --seeds 20 --requests 20

For each seed: re-split the ``assist`` task's 200 queries 80/20 (as ``bench/optimizer.py``
does), optimize on the 80% with budget B and every tier opted into ``stop =
"threshold"``, and serve each tier's policy on the 20%: ``--requests`` requests per
held-out query, each with one fixed sequence of Gaussian rewards (the same sequence for
every rule). Fixed N is the arm the optimizer chose under fixed-N pricing (the best of
the first N rewards, N samples paid); the threshold rule runs through the proxy's
sampler (``proxy.sampling.draw_samples`` with a judge, in its waves, against an
in-process upstream) and pays for every sample it launched. "pooled t*" is the same
rule with the closed-form threshold of all the chosen prompt's rewards pooled
(``policies.reward_threshold``), at the cap the optimizer found best for it.

Realised utility per request = best weighted reward drawn − λ·cost·samples launched.
``assist_rows(args)`` returns one dict per tier (means over seeds and requests);
``main()`` prints them as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from optimizer import optimize  # noqa: E402
from policies import StopRule, weight_vector  # noqa: E402
from proxy.breaker import CircuitBreaker  # noqa: E402
from proxy.config import RetryConfig  # noqa: E402
from proxy.metrics import ProxyMetrics  # noqa: E402
from proxy.sampling import Sample, draw_samples  # noqa: E402
from proxy.upstream import UpstreamClient  # noqa: E402

Array = npt.NDArray[np.float64]
THRESHOLD = StopRule(kind="threshold")
FULL = StopRule(kind="full")


def bench_optimizer() -> Any:
    """``bench/optimizer.py`` (its name would shadow the ``optimizer`` package)."""
    spec = importlib.util.spec_from_file_location("bench_optimizer", HERE / "optimizer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sequence_upstream(
    name: str,
    text_of: Callable[[int, int], str],
    requests: int,
    latency_s: float = 0.0,
    seed: int = 0,
) -> UpstreamClient:
    """An in-process upstream whose k-th sample of request ``rid`` (the body's ``rid``) is
    ``text_of(rid, k)``; each call takes the next ``n`` samples of its request after
    ``latency_s`` × U[0.5, 1.5]. The same sequence per request whatever the waves."""
    cursors = [0] * requests
    jitter = np.random.default_rng(seed)

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        rid, k = body["rid"], body.get("n", 1)
        if latency_s:
            await asyncio.sleep(latency_s * (0.5 + float(jitter.random())))
        start = cursors[rid]
        cursors[rid] += k
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text_of(rid, start + i)}}
            for i in range(k)
        ]
        usage = {"prompt_tokens": 1, "completion_tokens": k}
        return httpx.Response(200, json={"choices": choices, "usage": usage, "model": "m"})

    return UpstreamClient(
        name,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        url=f"http://{name}.test/v1/chat/completions",
        headers={},
        timeout_s=60,
        connect_timeout_s=5,
        max_concurrency=4096,
        max_retries=0,
        retry=RetryConfig(),
        breaker=CircuitBreaker(name, failure_threshold=10**9, cooldown_s=1),
        metrics=ProxyMetrics(),
        rng=random.Random(seed),
    )


def upstream(scores: Array, latency_s: float = 0.0, seed: int = 0) -> UpstreamClient:
    """Request ``rid``'s k-th sample is the text ``rid:k`` (``scores`` (R, cap) are looked
    up by it)."""
    return sequence_upstream("assist", lambda rid, k: f"{rid}:{k}", len(scores), latency_s, seed)


async def serve_threshold(scores: Array, n: int, threshold: float) -> tuple[Array, Array, Array]:
    """Each request's (best reward, samples launched, waves) under the threshold rule."""
    served = await serve(scores, n, threshold)
    return served.best, served.launched, served.waves


@dataclass(frozen=True)
class Served:
    """Per request: the best reward drawn, samples launched, waves, seconds taken."""

    best: Array
    launched: Array
    waves: Array
    seconds: Array


async def serve(
    scores: Array,
    n: int,
    threshold: float | None,
    *,
    latency_s: float = 0.0,
    score_latency_s: float = 0.0,
    concurrency: int = 4096,
) -> Served:
    """Serve every request of ``scores`` through the proxy's sampler: Best-of-N of ``n``
    (``threshold`` None: all N at once, then one scoring call) or the threshold rule (a
    scoring call per wave); the upstream takes ``latency_s`` ±50% per call and the reward
    service ``score_latency_s`` per call."""
    client = upstream(scores, latency_s)
    best, launched, waves, seconds = (np.zeros(len(scores)) for _ in range(4))
    gate = asyncio.Semaphore(concurrency)

    def score_of(sample: Sample) -> float:
        rid, k = sample.text.split(":")
        return float(scores[int(rid), int(k)])

    async def one(rid: int) -> None:
        async def judge(samples: Sequence[Sample]) -> bool:
            if score_latency_s:
                await asyncio.sleep(score_latency_s)
            assert threshold is not None
            return any(score_of(s) >= threshold for s in samples)

        loop = asyncio.get_running_loop()
        async with gate:
            start = loop.time()
            result = await draw_samples(
                client,
                {"rid": rid},
                n=n,
                supports_n=True,
                extractor=None,
                stop=FULL if threshold is None else THRESHOLD,
                deadline=start + 60,
                judge=None if threshold is None else judge,
            )
            if threshold is None and score_latency_s:
                await asyncio.sleep(score_latency_s)  # Best-of-N scores its N at once
            seconds[rid] = loop.time() - start
        best[rid] = max(score_of(s) for s in result.samples)
        launched[rid], waves[rid] = result.launched, result.waves

    await asyncio.gather(*(one(rid) for rid in range(len(scores))))
    return Served(best, launched, waves, seconds)


async def served_tiers(
    bench: Any, module: Any, seed: int, budget: int, requests: int
) -> AsyncIterator[tuple[Any, Any, Any, Array, float]]:
    """One seed's run: re-split ``assist`` 80/20, optimize on the 80% with every tier
    opted into the threshold rule, and for each tier yield (tier, its report, its policy
    entry, the held-out requests' reward sequences (R, 32), λ · cost per sample): each
    held-out query ``requests`` times, one fixed sequence of Gaussian rewards each."""
    n_max = 32
    quality = bench.quality(n_max)
    cost = bench.cost_per_prompt[None, :, None] * np.arange(1, n_max + 1)[None, None, :]
    cost = np.stack([t.cost_weight * cost[0] for t in bench.tiers])
    train_q, _, _, _ = module.resplit(quality, cost, seed)
    test_q = np.setdiff1d(np.arange(bench.num_queries), train_q)
    task, train = bench.train(train_q, n_max)
    task = _opt_in(task)
    rng = np.random.default_rng(seed)
    result = await optimize(task, bench.sampler(train, rng), budget, rng)
    draws = np.random.default_rng([seed, 1])
    for tier in task.tiers:
        report, choice = result.tiers[tier.name], result.policy.tiers[tier.name]
        assert choice.threshold is not None
        p = report.chosen.prompt
        weights = weight_vector(bench.objectives, tier.objective_weights)
        mean = bench.means[p, test_q] @ weights  # (Qt,)
        sd = float(np.sqrt((bench.spread[p] ** 2) @ (weights**2)))
        means = np.repeat(mean, requests)
        scores = means[:, None] + sd * draws.standard_normal((means.size, n_max))
        yield tier, report, choice, scores, tier.cost_weight * float(bench.cost_per_prompt[p])


async def one_seed(bench: Any, module: Any, seed: int, args: argparse.Namespace) -> list[dict]:
    """Per tier: realised utility of fixed N, the chosen rule and the pooled t* rule."""
    rows = []
    async for tier, report, choice, scores, price in served_tiers(
        bench, module, seed, args.budget, args.requests
    ):
        assert report.threshold is not None
        fixed_n = report.chosen.n
        fixed = scores[:, :fixed_n].max(axis=1) - price * fixed_n
        best, launched, waves = await serve_threshold(scores, choice.n, choice.threshold)
        rule = best - price * launched
        pooled_best, pooled_launched, _ = await serve_threshold(
            scores, report.threshold.pooled_n, report.threshold.pooled_threshold
        )
        rows.append(
            {
                "tier": tier.name,
                "cost_weight": tier.cost_weight,
                "fixed_n": fixed_n,
                "rule_n": choice.n,
                "stops": report.threshold.stops,
                "threshold": choice.threshold,
                "pooled_threshold": report.threshold.pooled_threshold,
                "fixed": float(fixed.mean()),
                "rule": float(rule.mean()),
                "pooled": float((pooled_best - price * pooled_launched).mean()),
                "samples": float(launched.mean()),
                "waves": float(waves.mean()),
                "estimated_gain": report.threshold.utility - report.threshold.fixed_utility,
                "gain": float((rule - fixed).mean()),
            }
        )
    return rows


async def assist_tier_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The per-tier table with latency: one seed's policy (every tier opted into the
    threshold rule), each tier's fixed-N arm and its threshold rule served on the held-out
    queries at ``args.latency_ms`` per upstream call and ``args.score_latency_ms`` per
    reward call: samples, best reward, realised utility, p50/p99."""
    module = bench_optimizer()
    bench = module.GaussianRewardBench(7, 200)
    rows: list[dict[str, Any]] = []
    async for tier, report, choice, scores, price in served_tiers(
        bench, module, args.assist_seed, args.assist_budget, args.assist_requests
    ):
        p, fixed_n = report.chosen.prompt, report.chosen.n
        for name, n, threshold in (
            ("fixed N", fixed_n, None),
            ("threshold rule (the stopping-aware policy)", choice.n, choice.threshold),
        ):
            served = await serve(
                scores,
                n,
                threshold,
                latency_s=args.latency_ms / 1000,
                score_latency_s=args.score_latency_ms / 1000,
                concurrency=args.concurrency * 4,
            )
            rows.append(
                {
                    "tier": tier.name,
                    "cost_weight": tier.cost_weight,
                    "rule": name,
                    "arm": f"{p} @ N={n}",
                    "samples": float(served.launched.mean()),
                    "waves": float(served.waves.mean()),
                    "reward": float(served.best.mean()),
                    "utility": float((served.best - price * served.launched).mean()),
                    "p50": float(np.median(served.seconds)) * 1000,
                    "p99": float(np.percentile(served.seconds, 99)) * 1000,
                }
            )
    return rows


def _opt_in(task: Any) -> Any:
    import msgspec

    tiers = tuple(msgspec.structs.replace(t, stop="threshold") for t in task.tiers)
    return msgspec.structs.replace(task, tiers=tiers)


def assist_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per tier: means over seeds (realised utilities, samples, waves) and the
    standard error over seeds of the paired gain (rule − fixed N)."""
    module = bench_optimizer()
    bench = module.GaussianRewardBench(7, 200)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs = [asyncio.run(one_seed(bench, module, s, args)) for s in seeds]
    out = []
    for t, tier in enumerate(bench.tiers):
        cells = [run[t] for run in runs]
        gains = np.array([c["gain"] for c in cells])
        row: dict[str, Any] = {"tier": tier.name, "cost_weight": tier.cost_weight}
        for key in ("fixed_n", "rule_n", "threshold", "pooled_threshold", "fixed", "rule"):
            row[key] = float(np.mean([c[key] for c in cells]))
        for key in ("pooled", "samples", "waves", "estimated_gain"):
            row[key] = float(np.mean([c[key] for c in cells]))
        row["stops"] = float(np.mean([c["stops"] for c in cells]))
        row["gain"] = float(gains.mean())
        row["gain_se"] = float(gains.std(ddof=1) / np.sqrt(gains.size)) if gains.size > 1 else 0.0
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=300)
    parser.add_argument("--requests", type=int, default=10, help="requests per held-out query")
    args = parser.parse_args()
    rows = assist_rows(args)
    print(
        f"assist, B={args.budget}, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, "
        f"40 held-out queries × {args.requests} requests per seed\n"
    )
    print(
        "| tier (λ) | fixed N | utility, fixed N | threshold rule: cap N | samples/request "
        "| waves/request | utility, rule | gain ± se | optimizer's estimated gain "
        "| rule kept | utility, pooled t* |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['tier']} ({r['cost_weight']:g}) | {r['fixed_n']:.1f} | {r['fixed']:.4f} "
            f"| {r['rule_n']:.1f} | {r['samples']:.2f} | {r['waves']:.2f} | {r['rule']:.4f} "
            f"| {r['gain']:+.4f} ± {r['gain_se']:.4f} | {r['estimated_gain']:+.4f} "
            f"| {r['stops']:.0%} | {r['pooled']:.4f} |"
        )


if __name__ == "__main__":
    main()
