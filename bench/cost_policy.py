"""Stopping-aware pricing against pricing every sample: realised utility per tier on MATH.

    .venv/bin/python bench/cost_policy.py --seeds 60 --budget 3000
    .venv/bin/python bench/cost_policy.py --tiers economy=3,standard=1,premium=0.2

Both policies are served with exact early stopping (the proxy's ``stop = "exact"``);
they differ only in how the optimizer priced N: every sample drawn (the tier's
``stop = "full"``, as before issue 13), or the samples exact stopping is expected to draw
(``stop = "exact"``). For each seed: an 80/20 re-split of the MATH queries, both
optimizations on the 80% with budget B (``pooled-halving``, the same seed), and each
tier's pick scored on the 20% by its exact accuracy minus λ · cost per sample · the
samples exact stopping really draws there (``_stopping.exact_stop_samples``). The
oracle row is the same with perfect knowledge: the best arm on all queries under each
pricing, scored on all queries (the most stopping-aware pricing can gain).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import msgspec
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from optimizer import RecordedTable, ReplaySampler, load_table, optimize, replay_task  # noqa: E402
from policies.tiers import parse_tiers  # noqa: E402

sys.path.append(str(HERE))
from _stopping import exact_stop_samples  # noqa: E402
from cost_assist import bench_optimizer  # noqa: E402

DATA = HERE.parent / ".." / "shared" / "data" / "MATH_final.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DATA)
    parser.add_argument("--tiers", default="economy=1.0,standard=0.2,premium=0")
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=60)
    parser.add_argument("--first-seed", type=int, default=300)
    parser.add_argument("--n-max", type=int, default=32)
    args = parser.parse_args()
    logging.getLogger("optimizer").setLevel(logging.ERROR)
    table = load_table(str(args.table))
    assert isinstance(table, RecordedTable), "a majority-vote table"
    table = table.merged()
    k = args.n_max
    full_tiers = parse_tiers(args.tiers)
    exact_tiers = tuple(msgspec.structs.replace(t, stop="exact") for t in full_tiers)
    names = [t.name for t in full_tiers]
    lam = np.array([t.cost_weight for t in full_tiers])
    cost = table.cost_per_prompt
    acc = bench_optimizer().exact_accuracy(table, k)  # (P, Q, K)
    tau = exact_stop_samples(table.cat_probs, k)  # (P, Q, K)
    sizes = np.arange(1, k + 1)

    def served(queries: np.ndarray) -> np.ndarray:
        """(T, P, K) utility on ``queries`` served with exact stopping."""
        drawn = tau[:, queries].mean(axis=1)
        return acc[:, queries].mean(axis=1)[None] - lam[:, None, None] * cost[None, :, None] * drawn

    # The ceiling: perfect knowledge of every arm, either pricing.
    everything = np.arange(table.num_queries)
    truth = served(everything)
    priced_full = acc.mean(axis=1)[None] - lam[:, None, None] * cost[None, :, None] * sizes
    ceiling = []
    for t in range(len(names)):
        pick_full = np.unravel_index(np.argmax(priced_full[t]), priced_full[t].shape)
        pick_exact = np.unravel_index(np.argmax(truth[t]), truth[t].shape)
        ceiling.append(
            (truth[t][pick_full], truth[t][pick_exact], pick_full[1] + 1, pick_exact[1] + 1)
        )

    got: dict[str, list[np.ndarray]] = {"full": [], "exact": []}
    picked_n: dict[str, list[list[int]]] = {"full": [], "exact": []}
    samples_error: list[np.ndarray] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        order = np.random.default_rng(seed).permutation(table.num_queries)
        n_test = round(0.2 * table.num_queries)
        test_q, train_q = order[:n_test], np.sort(order[n_test:])
        train = RecordedTable(table.cat_probs[:, train_q], table.answers[train_q], cost)
        u_test = served(test_q)
        for name, tiers in (("full", full_tiers), ("exact", exact_tiers)):
            task = replay_task(train, tiers=tiers, n_max=k)
            rng = np.random.default_rng([seed, args.budget])
            result = asyncio.run(optimize(task, ReplaySampler(train, rng), args.budget, rng))
            picks = [(int(c.prompt.id), c.n) for c in result.policy.tiers.values()]
            got[name].append(np.array([u_test[t, p, n - 1] for t, (p, n) in enumerate(picks)]))
            picked_n[name].append([n for _, n in picks])
            if name == "exact":
                predicted = [c.expected_samples or c.n for c in result.policy.tiers.values()]
                real = [tau[p, test_q, n - 1].mean() for p, n in picks]
                samples_error.append(np.array(predicted) - np.array(real))
        print(f"seed {seed} done", file=sys.stderr, flush=True)

    diff = np.array(got["exact"]) - np.array(got["full"])
    error = np.array(samples_error)
    print(
        f"{args.table.name}: {table.num_prompts} prompts × {table.num_queries} queries, tiers "
        f"{args.tiers}, B={args.budget}, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}"
        f", 80/20 re-splits; every policy served with exact stopping\n"
    )
    print(
        "| tier | λ | N, priced per sample | N, priced by expected samples | realised utility, "
        "priced per sample | priced by expected samples | paired difference | "
        "ceiling: per sample → expected samples | expected − real samples |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t, name in enumerate(names):
        full, exact = np.array(got["full"])[:, t], np.array(got["exact"])[:, t]
        se = diff[:, t].std(ddof=1) / np.sqrt(len(diff))
        c_full, c_exact, n_full, n_exact = ceiling[t]
        print(
            f"| {name} | {lam[t]:g} | {np.mean([n[t] for n in picked_n['full']]):.1f} | "
            f"{np.mean([n[t] for n in picked_n['exact']]):.1f} | {full.mean():.4f} | "
            f"{exact.mean():.4f} | {diff[:, t].mean():+.4f} ± {se:.4f} | "
            f"{c_full:.4f} (N={n_full}) → {c_exact:.4f} (N={n_exact}) | "
            f"{error[:, t].mean():+.2f} |"
        )


if __name__ == "__main__":
    main()
