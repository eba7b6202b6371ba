"""What stopping early saves and costs, on MATH replay: samples, accuracy, p50/p99.

    .venv/bin/python bench/cost.py --curve bench/cost_curve.svg  # N = 8, 16, 32; 500 requests
    .venv/bin/python bench/cost.py --n 16 --requests 200 --curve-n

It runs the proxy's sampler (``proxy.sampling.draw_samples``, first waves sized by
``proxy.waves.WaveHistory`` as the proxy does) in process against an upstream that
answers from ``MATH_final.npz`` with a latency drawn uniformly from [0.5, 1.5] ×
``--latency-ms`` per call, as ``iapo simulate`` does; not through ``iapo serve`` (the
proxy adds ~2 ms, see ``bench/proxy.py``). Each request is a random (prompt, test
question) pair with a fixed sequence of N sampled answers, the same sequence for every
rule, so the rules differ only in where they stop.

Rules (``RULES``): fixed N (``full``); exact stopping with waves as they were before the
sliding window (each wave the fewest samples that could decide, ``next_wave``, waited
for in full; written here with ``UpstreamClient.chat``), the baseline whose savings the
others keep a share of; the proxy's sliding window with its first wave minimal, sized
from history, and with later waves sized too (what the proxy does for exact stopping);
confident stopping with a minimal first wave (later waves ≤ N/8, as the proxy's), with a
sized first wave (what the proxy does, at δ = 0.05, 0.1, 0.2 and 0.25) and with sized later
waves. A sized rule's history starts with the decision points
of 256 other requests (what earlier traffic would have taught the proxy), then learns
from its own. A request's samples count as drawn when launched (a cancelled call is
billed). Accuracy is the vote's answer against the gold answer (ties broken at random
with a fixed seed); "differs" is the share of requests whose full vote has a unique
winner and whose answer is not it. ± is one standard error (bootstrap for p50).

``curve_rows`` is the accuracy-savings trade-off of confident stopping over δ (δ = 0:
exact), drawing one sample at a time (no waves: what the rule itself needs).
Sections are functions returning rows (``math_rows``, ``curve_rows``) so other sections
(``bench/cost_assist.py``, optimizer policies) can sit beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer import RecordedTable, ReplaySampler, load_table, optimize, replay_task  # noqa: E402
from optimizer.exact import majority_credit_exact  # noqa: E402
from optimizer.svg import render_xy  # noqa: E402
from policies import (  # noqa: E402
    Extractor,
    ExtractorSpec,
    Policy,
    StopRule,
    majority_vote,
    make_extractor,
    parse_tiers,
)
from proxy.sampling import draw_samples, next_wave  # noqa: E402
from proxy.upstream import UpstreamClient  # noqa: E402
from proxy.waves import SECOND_TRIP, WaveHistory, decision_point  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from cost_assist import assist_tier_rows, sequence_upstream  # noqa: E402

Row = dict[str, Any]
DATA = ROOT.parent / "shared" / "data" / "MATH_final.npz"
EXACT = StopRule(kind="exact")
BASELINE = "exact, waves as before"
WARM = 256  # requests of history a sized rule starts with (WaveHistory's window)


@dataclass(frozen=True)
class Rule:
    """One row's way of drawing: ``sampler`` "waves" is the old waves, "window" the proxy's
    ``draw_samples``; ``sized``: first wave from history; ``baseline``: whose savings it
    keeps a share of."""

    stop: StopRule
    sampler: str = "window"
    sized: bool = False
    later: bool = False
    baseline: str | None = BASELINE


RULES: dict[str, Rule] = {
    "full": Rule(StopRule(kind="full"), baseline=None),
    BASELINE: Rule(EXACT, sampler="waves", baseline=None),
    "exact, window, minimal first wave": Rule(EXACT),
    "exact, window, sized first wave": Rule(EXACT, sized=True),
    "exact, window, sized waves (the proxy)": Rule(EXACT, sized=True, later=True),
    "confident δ=0.05, minimal first wave": Rule(
        StopRule(kind="confident", delta=0.05), baseline=None
    ),
    "confident δ=0.05, sized first wave (the proxy)": Rule(
        StopRule(kind="confident", delta=0.05),
        sized=True,
        baseline="confident δ=0.05, minimal first wave",
    ),
    "confident δ=0.1, sized first wave (the proxy)": Rule(
        StopRule(kind="confident", delta=0.1), sized=True, baseline=None
    ),
    "confident δ=0.2, sized first wave (the proxy)": Rule(
        StopRule(kind="confident", delta=0.2), sized=True, baseline=None
    ),
    "confident δ=0.25, sized first wave (the proxy)": Rule(
        StopRule(kind="confident", delta=0.25), sized=True, baseline=None
    ),
    "confident δ=0.05, sized waves": Rule(
        StopRule(kind="confident", delta=0.05),
        sized=True,
        later=True,
        baseline="confident δ=0.05, minimal first wave",
    ),
}
DELTAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.3)


@dataclass(frozen=True)
class Requests:
    """``sequences[r]``: request r's N answers (category indices); ``gold[r]`` its answer;
    ``warm``: sequences of other requests like these (what earlier traffic taught the
    proxy's wave history)."""

    n: int
    sequences: list[list[int]]
    gold: list[int]
    warm: list[list[int]]


def make_requests(
    table: Path, n: int, count: int, seed: int, prompt: int | None = None
) -> Requests:
    """``count`` random (prompt, test question) pairs with N answers drawn for each, and
    as many more for the warm history; ``prompt``: always that prompt (a policy's arm)."""
    data = np.load(table)
    probs, gold_all = data["cat_probs_test"], data["answers_test"]
    rng = np.random.default_rng(seed + n)
    sequences, gold = [], []
    for _ in range(count + WARM):
        p = int(rng.integers(probs.shape[0])) if prompt is None else prompt
        q = int(rng.integers(probs.shape[1]))
        dist = probs[p, q] / probs[p, q].sum()
        sequences.append([int(c) for c in rng.choice(len(dist), size=n, p=dist)])
        gold.append(int(gold_all[q]))
    return Requests(n, sequences[:count], gold[:count], sequences[count:])


def upstream(sequences: list[list[int]], latency_s: float, seed: int) -> UpstreamClient:
    """MATH replay: request ``rid``'s k-th sample boxes answer ``sequences[rid][k]``."""
    return sequence_upstream(
        "replay",
        lambda rid, k: f"\\boxed{{{sequences[rid][k]}}}",
        len(sequences),
        latency_s,
        seed,
    )


async def waves_as_before(
    client: UpstreamClient,
    rid: int,
    n: int,
    extract: Extractor,
    *,
    supports_n: bool,
    deadline: float,
) -> tuple[list[str | None], int]:
    """Exact stopping as it was: wave = ``next_wave``, wait for all of it, repeat.
    Returns the answers and the samples launched."""
    counts: Counter[str] = Counter()
    answers: list[str | None] = []
    while len(answers) < n and not EXACT.decided(counts, n - len(answers)):
        k = next_wave(counts, n - len(answers))
        sizes = [k] if supports_n else [1] * k
        calls = [
            client.chat(msgspec.json.encode({"rid": rid, "n": size}), deadline=deadline)
            for size in sizes
        ]
        for completion in await asyncio.gather(*calls):
            for choice in completion.choices:
                answer = extract(choice.text)
                answers.append(answer)
                if answer is not None:
                    counts[answer] += 1
    return answers, len(answers)


def _se(values: npt.NDArray[np.float64]) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def _p50_se(latencies: npt.NDArray[np.float64], seed: int) -> float:
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(latencies), size=(500, len(latencies)))
    return float(np.median(latencies[picks], axis=1).std(ddof=1))


async def run_rule(name: str, requests: Requests, args: argparse.Namespace) -> Row:
    """One row: ``name``'s savings, accuracy, answers differing from the full vote, p50/p99."""
    rule, n = RULES[name], requests.n
    client = upstream(requests.sequences, args.latency_ms / 1000, args.seed)
    extract = make_extractor(ExtractorSpec(kind="boxed"))
    semaphore = asyncio.Semaphore(args.concurrency)
    history = WaveHistory(second_trip=args.second_trip)
    if rule.sized:
        # What earlier traffic would have taught the proxy: decision points of other requests.
        for sequence in requests.warm:
            history.record(n, decision_point([str(a) for a in sequence], n, rule.stop))
    count = len(requests.sequences)
    latencies, drawn, correct, differs = np.zeros(count), np.zeros(count), np.zeros(count), 0
    loop = asyncio.get_running_loop()

    async def one(rid: int) -> None:
        nonlocal differs
        async with semaphore:
            start = loop.time()
            if rule.sampler == "waves":
                answers, launched = await waves_as_before(
                    client, rid, n, extract, supports_n=args.supports_n, deadline=start + 60
                )
            else:
                result = await draw_samples(
                    client,
                    {"rid": rid},
                    n=n,
                    supports_n=args.supports_n,
                    extractor=extract,
                    stop=rule.stop,
                    deadline=start + 60,
                    first_wave=history.first_wave(n, n) if rule.sized else None,
                    decision_points=history.learned(n) if rule.later else (),
                )
                if result.errors:
                    raise result.errors[0]
                history.record(n, result.decided_at)
                answers, launched = [s.answer for s in result.samples], result.launched
            latencies[rid] = loop.time() - start
        tie_break = np.random.default_rng(rid)
        vote = majority_vote(answers, tie_break)
        full = majority_vote([str(a) for a in requests.sequences[rid]], np.random.default_rng(rid))
        drawn[rid] = launched
        correct[rid] = vote.answer == str(requests.gold[rid])
        differs += len(full.tied) == 1 and vote.answer != full.answer

    await asyncio.gather(*(one(rid) for rid in range(count)))
    saved = 1 - drawn / n
    return {
        "n": n,
        "rule": name,
        "saved": float(saved.mean()),
        "saved_se": _se(saved),
        "accuracy": float(correct.mean()),
        "differs": differs / count,
        "p50": float(np.median(latencies)) * 1000,
        "p50_se": _p50_se(latencies, args.seed) * 1000,
        "p99": float(np.percentile(latencies, 99)) * 1000,
    }


async def math_rows(args: argparse.Namespace) -> list[Row]:
    """The MATH section: one row per (N, rule), with the p50 ratio to fixed N and the
    share of the baseline rule's savings kept."""
    rows: list[Row] = []
    for n in args.n:
        requests = make_requests(args.table, n, args.requests, args.seed)
        by_name: dict[str, Row] = {}
        for name, rule in RULES.items():
            if args.rules and rule.baseline is not None and name not in args.rules:
                continue
            row = by_name[name] = await run_rule(name, requests, args)
            row["p50_ratio"] = float(row["p50"]) / float(by_name["full"]["p50"])
            base = by_name.get(rule.baseline) if rule.baseline else None
            row["share"] = (
                float(row["saved"]) / float(base["saved"]) if base and base["saved"] else None
            )
            rows.append(row)
            if args.progress:
                print(format_math_row(row), flush=True)
    return rows


# The per-tier table's rules: its name for each row -> the RULES entry it runs.
TIER_RULES = {
    "fixed N": "full",
    "exact, waves as before": BASELINE,
    "exact, latency-aware (the proxy)": "exact, window, sized waves (the proxy)",
    "confident δ=0.05": "confident δ=0.05, sized first wave (the proxy)",
    "confident δ=0.2": "confident δ=0.2, sized first wave (the proxy)",
}
STOPPING_AWARE = "stopping-aware policy, exact (the proxy)"


async def math_policies(args: argparse.Namespace) -> tuple[Policy, Policy]:
    """The policies ``iapo optimize`` writes for MATH's training split: N priced per
    sample (every tier ``stop = "full"``), and by the samples exact stopping is expected
    to draw (every tier ``stop = "exact"``); same budget and seed."""
    table = load_table(str(args.table))
    assert isinstance(table, RecordedTable)
    tiers = parse_tiers(args.tiers)
    out = []
    for stop in ("full", "exact"):
        priced = tuple(msgspec.structs.replace(t, stop=stop) for t in tiers)
        task = replay_task(table, tiers=priced, n_max=32)
        rng = np.random.default_rng(args.seed)
        result = await optimize(task, ReplaySampler(table, rng), args.budget, rng)
        out.append(result.policy)
    return out[0], out[1]


def exact_accuracy(table: Path, prompt: int, n: int) -> float:
    """The arm's exact majority-vote accuracy on the test split (no sampling noise)."""
    data = np.load(table)
    probs = data["cat_probs_test"][prompt : prompt + 1]
    credit = majority_credit_exact(probs, data["answers_test"], n)
    return float(credit[0, :, n - 1].mean())


async def math_tier_rows(args: argparse.Namespace) -> list[Row]:
    """Per tier of the default tiers: the policy's (prompt, N), priced per sample, served
    with every rule of ``TIER_RULES``, and the stopping-aware policy's own arm served with
    the proxy's exact stopping. Realised utility = accuracy − λ · cost per sample ·
    samples launched per request (measured accuracy; "exact" uses the arm's exact
    accuracy on the test split, free of sampling noise across arms)."""
    full_policy, aware_policy = await math_policies(args)
    cost = np.load(args.table)["cost_per_prompt"]
    rows: list[Row] = []
    for tier, choice in full_policy.tiers.items():
        aware = aware_policy.tiers[tier]
        arms = [(name, rule, choice) for name, rule in TIER_RULES.items()]
        arms.append((STOPPING_AWARE, "exact, window, sized waves (the proxy)", aware))
        for name, rule, arm in arms:
            p, n = int(arm.prompt.id), arm.n
            requests = make_requests(args.table, n, args.tier_requests, args.seed, prompt=p)
            row = await run_rule(rule, requests, args)
            samples = n * (1 - float(row["saved"]))
            price = choice.cost_weight * float(cost[p])
            exact = exact_accuracy(args.table, p, n)
            row.update(
                tier=tier,
                rule=name,
                cost_weight=choice.cost_weight,
                arm=f"{p} @ N={n}",
                samples=samples,
                utility=float(row["accuracy"]) - price * samples,
                exact_utility=exact - price * samples,
                exact_accuracy=exact,
            )
            rows.append(row)
            if args.progress:
                print(format_tier_row(row), flush=True)
    return rows


TIER_HEADER = (
    "| tier (λ) | rule | prompt @ N | samples / request | accuracy | realised utility "
    "| exact accuracy → utility | p50 ms | p99 ms |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def format_tier_row(row: Row) -> str:
    return (
        f"| {row['tier']} ({row['cost_weight']:g}) | {row['rule']} | {row['arm']} | "
        f"{row['samples']:.2f} | {row['accuracy']:.1%} | {row['utility']:.4f} | "
        f"{row['exact_accuracy']:.1%} → {row['exact_utility']:.4f} | {row['p50']:.0f} | "
        f"{row['p99']:.0f} |"
    )


def curve_rows(table: Path, ns: list[int], count: int, seed: int) -> list[dict[str, float]]:
    """Accuracy against samples saved for confident stopping over ``DELTAS`` (δ = 0:
    exact), one sample at a time, on the same kind of requests as ``math_rows``."""
    rows = []
    for n in ns:
        requests = make_requests(table, n, count, seed)
        for delta in (0.0, *DELTAS):
            stop = EXACT if delta == 0.0 else StopRule(kind="confident", delta=delta)
            saved, correct, differs = np.zeros(count), np.zeros(count), 0
            for rid, sequence in enumerate(requests.sequences):
                answers: list[str | None] = [str(a) for a in sequence]
                point = decision_point(answers, n, stop)
                assert point is not None
                vote = majority_vote(answers[:point], np.random.default_rng(rid))
                full = majority_vote(answers, np.random.default_rng(rid))
                saved[rid] = 1 - point / n
                correct[rid] = vote.answer == str(requests.gold[rid])
                differs += len(full.tied) == 1 and vote.answer != full.answer
            rows.append(
                {
                    "n": n,
                    "delta": delta,
                    "saved": float(saved.mean()),
                    "saved_se": _se(saved),
                    "accuracy": float(correct.mean()),
                    "accuracy_se": _se(correct),
                    "differs": differs / count,
                }
            )
    return rows


def format_math_row(row: Row) -> str:
    share = row.get("share")
    return (
        f"| {row['n']} | {row['rule']} | {row['saved']:.1%} ± {row['saved_se']:.1%} | "
        f"{'' if share is None else f'{share:.0%}'} | {row['accuracy']:.1%} | "
        f"{row['differs']:.1%} | {row['p50']:.0f} ± {row['p50_se']:.0f} | "
        f"{row['p50_ratio']:.2f} | {row['p99']:.0f} |"
    )


MATH_HEADER = (
    "| N | rule | samples saved | share of baseline's savings | accuracy "
    "| differs from full vote | p50 ms | p50 / full | p99 ms |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def curve_svg(rows: list[dict[str, float]]) -> str:
    series: dict[str, list[tuple[float, float, str]]] = {}
    for row in rows:
        label = "exact" if row["delta"] == 0 else f"δ={row['delta']:g}"
        point = (row["saved"] * 100, row["accuracy"] * 100, label)
        points = series.setdefault(f"N={row['n']:.0f}", [])
        if points and np.allclose(points[-1][:2], point[:2]):
            # δ values that stop alike share one point: "exact–δ=0.01", not three labels
            first = points[-1][2].split("–")[0]
            points[-1] = (*points[-1][:2], f"{first}–{label}")
        else:
            points.append(point)
    return render_xy(
        "MATH: confident stopping, accuracy vs samples saved",
        series,
        x_label="samples saved (%)",
        y_label="accuracy (%)",
    )


async def tier_sections(args: argparse.Namespace) -> None:
    """The per-tier tables: MATH's policy served with every rule, and ``assist``'s."""
    print(
        f"\nPer tier, MATH: the policy for {args.tiers} (pooled-halving, B={args.budget}, "
        f"seed {args.seed}) on the test split, {args.tier_requests} requests per row\n"
    )
    print(TIER_HEADER)
    rows = await math_tier_rows(args)
    if not args.progress:
        for row in rows:
            print(format_tier_row(row))
    print(
        f"\nPer tier, assist: one policy (B={args.assist_budget}, seed {args.assist_seed}, "
        f'every tier opted into stop = "threshold"), 40 held-out queries × '
        f"{args.assist_requests} requests, reward service {args.score_latency_ms:g} ms a call\n"
    )
    print(
        "| tier (λ) | rule | prompt @ N | samples / request | waves | best reward "
        "| realised utility | p50 ms | p99 ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in await assist_tier_rows(args):
        print(
            f"| {row['tier']} ({row['cost_weight']:g}) | {row['rule']} | {row['arm']} | "
            f"{row['samples']:.2f} | {row['waves']:.1f} | {row['reward']:.4f} | "
            f"{row['utility']:.4f} | {row['p50']:.0f} | {row['p99']:.0f} |"
        )


async def main_async(args: argparse.Namespace) -> None:
    if args.only_tiers:
        await tier_sections(args)
        return
    print(
        f"MATH replay ({args.table.name}, test split), {args.requests} requests per cell, "
        f"concurrency {args.concurrency}, latency {args.latency_ms} ms ±50%, "
        f"{'n honoured' if args.supports_n else 'fan-out'}, seed {args.seed}\n"
    )
    print(MATH_HEADER)
    rows = await math_rows(args)
    if not args.progress:
        for row in rows:
            print(format_math_row(row))
    if args.curve_n:
        curve = curve_rows(args.table, args.curve_n, args.curve_requests, args.seed)
        print(
            f"\nConfident stopping over δ, one sample at a time, {args.curve_requests} requests\n"
        )
        print("| N | δ | samples saved | accuracy | differs from full vote |")
        print("| --- | --- | --- | --- | --- |")
        for row in curve:
            delta = "0 (exact)" if row["delta"] == 0 else f"{row['delta']:g}"
            print(
                f"| {row['n']:.0f} | {delta} | {row['saved']:.1%} ± {row['saved_se']:.1%} | "
                f"{row['accuracy']:.1%} ± {row['accuracy_se']:.1%} | {row['differs']:.1%} |"
            )
        if args.curve is not None:
            args.curve.write_text(curve_svg(curve))
            print(f"\ncurve written to {args.curve}")
    if not args.skip_tiers:
        await tier_sections(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DATA)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--supports-n", action="store_true", help="one call with n=k per wave")
    parser.add_argument("--curve-n", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--curve-requests", type=int, default=2000)
    parser.add_argument("--curve", type=Path, help="write the δ curve as an SVG picture")
    parser.add_argument(
        "--second-trip", type=float, default=SECOND_TRIP, help="WaveHistory's second_trip"
    )
    parser.add_argument("--rules", nargs="*", help="only these rows (full and baselines kept)")
    parser.add_argument("--progress", action="store_true", help="print rows as they finish")
    parser.add_argument("--tiers", default="economy=1.0,standard=0.2,premium=0")
    parser.add_argument("--budget", type=int, default=3000, help="the MATH policy's budget")
    parser.add_argument("--tier-requests", type=int, default=500)
    parser.add_argument("--assist-budget", type=int, default=3000)
    parser.add_argument("--assist-seed", type=int, default=300)
    parser.add_argument("--assist-requests", type=int, default=10, help="per held-out query")
    parser.add_argument("--score-latency-ms", type=float, default=10.0)
    parser.add_argument("--skip-tiers", action="store_true", help="no per-tier tables")
    parser.add_argument("--only-tiers", action="store_true", help="only the per-tier tables")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
