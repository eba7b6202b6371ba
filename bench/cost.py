"""What stopping early saves and costs, on MATH replay: samples, accuracy, p50/p99.

    .venv/bin/python bench/cost.py                          # N = 8 and 32, 300 requests each
    .venv/bin/python bench/cost.py --n 16 --requests 500 --latency-ms 50

A first version. It runs the proxy's sampler (``proxy.sampling.draw_samples``) in
process against an upstream that answers from ``MATH_final.npz`` with a latency drawn
uniformly from [0.5, 1.5] × ``--latency-ms`` per call, as ``iapo simulate`` does; not
through ``iapo serve`` (the proxy adds ~2 ms, see ``bench/proxy.py``). Each request is a
random (prompt, test question) pair with a fixed sequence of N sampled answers, the same
sequence for every rule, so the rules differ only in where they stop. Rules: fixed N
(``full``), exact stopping with the first wave sized from the running mean agreement
(as the proxy does) and without it, and confident stopping at two δ. Accuracy is the
vote's answer against the gold answer (ties broken at random with a fixed seed);
"differs" is the share of requests whose full vote has a unique winner and whose answer
is not it. Every rule slides its window (``draw_samples``); "minimal first wave" opens
with the fewest samples that could decide, as the waves before this change did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies import ExtractorSpec, StopRule, majority_vote, make_extractor  # noqa: E402
from proxy.breaker import CircuitBreaker  # noqa: E402
from proxy.config import RetryConfig  # noqa: E402
from proxy.metrics import ProxyMetrics  # noqa: E402
from proxy.sampling import draw_samples, first_wave_size  # noqa: E402
from proxy.upstream import UpstreamClient  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "MATH_final.npz"
RULES: dict[str, tuple[StopRule, bool]] = {
    "full": (StopRule(kind="full"), False),
    "exact, minimal first wave": (StopRule(kind="exact"), False),
    "exact, sized first wave": (StopRule(kind="exact"), True),
    "confident δ=0.01": (StopRule(kind="confident", delta=0.01), True),
    "confident δ=0.05": (StopRule(kind="confident", delta=0.05), True),
}


def upstream(sequences: list[list[int]], latency_s: float, seed: int) -> UpstreamClient:
    cursors = [0] * len(sequences)
    jitter = np.random.default_rng(seed)

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        rid, k = body["rid"], body.get("n", 1)
        await asyncio.sleep(latency_s * (0.5 + float(jitter.random())))
        start = cursors[rid]
        cursors[rid] += k
        picks = sequences[rid][start : start + k]
        choices = [
            {"index": i, "message": {"role": "assistant", "content": f"\\boxed{{{a}}}"}}
            for i, a in enumerate(picks)
        ]
        usage = {"prompt_tokens": 1, "completion_tokens": len(picks)}
        return httpx.Response(200, json={"choices": choices, "usage": usage, "model": "m"})

    return UpstreamClient(
        "replay",
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),  # type: ignore[arg-type]
        url="http://replay.test/v1/chat/completions",
        headers={},
        timeout_s=60,
        connect_timeout_s=5,
        max_concurrency=4096,
        max_retries=0,
        retry=RetryConfig(),
        breaker=CircuitBreaker("replay", failure_threshold=10**9, cooldown_s=1),
        metrics=ProxyMetrics(),
        rng=random.Random(seed),
    )


async def run_rule(
    name: str,
    sequences: list[list[int]],
    gold: list[int],
    n: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    stop, sized = RULES[name]
    client = upstream(sequences, args.latency_ms / 1000, args.seed)
    extract = make_extractor(ExtractorSpec(kind="boxed"))
    semaphore = asyncio.Semaphore(args.concurrency)
    mean_agreement: list[float | None] = [None]
    latencies, drawn, correct, differs = [], 0, 0.0, 0
    loop = asyncio.get_running_loop()

    async def one(rid: int) -> None:
        nonlocal drawn, correct, differs
        async with semaphore:
            first = first_wave_size(n, mean_agreement[0]) if sized else None
            start = loop.time()
            result = await draw_samples(
                client,
                {"rid": rid},
                n=n,
                supports_n=args.supports_n,
                extractor=extract,
                stop=stop,
                deadline=loop.time() + 60,
                first_wave=first,
            )
            latencies.append(loop.time() - start)
        vote = majority_vote([s.answer for s in result.samples], np.random.default_rng(rid))
        full = majority_vote([str(a) for a in sequences[rid]], np.random.default_rng(rid))
        drawn += result.launched
        correct += vote.answer == str(gold[rid])
        differs += len(full.tied) == 1 and vote.answer != full.answer
        a = vote.agreement
        mean_agreement[0] = a if mean_agreement[0] is None else 0.9 * mean_agreement[0] + 0.1 * a

    await asyncio.gather(*(one(rid) for rid in range(len(sequences))))
    count = len(sequences)
    return {
        "saved": 1 - drawn / (n * count),
        "accuracy": correct / count,
        "differs": differs / count,
        "p50": float(np.percentile(latencies, 50)) * 1000,
        "p99": float(np.percentile(latencies, 99)) * 1000,
    }


async def main_async(args: argparse.Namespace) -> None:
    table = np.load(args.table)
    probs, gold_all = table["cat_probs_test"], table["answers_test"]
    print(
        f"MATH replay ({args.table.name}, test split), {args.requests} requests per cell, "
        f"concurrency {args.concurrency}, latency {args.latency_ms} ms ±50%, "
        f"{'n honoured' if args.supports_n else 'fan-out'}, seed {args.seed}\n"
    )
    print("| N | rule | samples saved | accuracy | differs from full vote | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.n:
        rng = np.random.default_rng(args.seed + n)
        sequences, gold = [], []
        for _ in range(args.requests):
            p, q = int(rng.integers(probs.shape[0])), int(rng.integers(probs.shape[1]))
            dist = probs[p, q] / probs[p, q].sum()
            sequences.append([int(c) for c in rng.choice(len(dist), size=n, p=dist)])
            gold.append(int(gold_all[q]))
        for name in RULES:
            row = await run_rule(name, sequences, gold, n, args)
            print(
                f"| {n} | {name} | {row['saved']:.1%} | {row['accuracy']:.1%} | "
                f"{row['differs']:.1%} | {row['p50']:.0f} | {row['p99']:.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DATA)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--supports-n", action="store_true", help="one call with n=k per wave")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
