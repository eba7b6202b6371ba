"""Selection quality of the optimizer's methods on a recorded table (DESIGN.md,
"How quality is judged").

For each seed: merge train and test queries, re-split 80/20, optimize on the 80%
with budget B (replay sampling only), and score each tier's chosen arm by its exact
expected utility on the 20%, as a share of the utility on the 20% of the arm an
unlimited budget would pick on the 80%. Averaged over tiers and seeds; next to it,
the samples each method actually spent (mean and max).

    .venv/bin/python bench/optimizer.py --seeds 20 --budgets 500,1000,3000,10000
    .venv/bin/python bench/optimizer.py --first-seed 100 --seeds 100 --paired sh-pooled
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder would come first on sys.path and its own name
# would shadow the ``optimizer`` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from optimizer import (  # noqa: E402
    METHODS,
    RecordedTable,
    ReplaySampler,
    load_table,
    optimize,
    replay_task,
)
from optimizer.exact import majority_credit_exact  # noqa: E402
from policies.tiers import parse_tiers  # noqa: E402

DATA = HERE.parent / ".." / "shared" / "data" / "MATH_final.npz"
CACHE = HERE / ".cache"


def exact_accuracy(table: RecordedTable, n_max: int) -> npt.NDArray[np.float64]:
    """(P, Q, n_max) exact majority-vote accuracy, cached on disk by content hash."""
    digest = hashlib.sha256(table.cat_probs.tobytes() + table.answers.tobytes()).hexdigest()[:16]
    path = CACHE / f"majority-{digest}-{n_max}.npy"
    if path.exists():
        return np.load(path)
    print(f"computing exact majority-vote accuracy ({path.name}) ...", file=sys.stderr)
    acc = majority_credit_exact(table.cat_probs, table.answers, n_max)
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    np.save(path, acc)
    return acc


def resplit(
    acc: npt.NDArray[np.float64], cost: npt.NDArray[np.float64], seed: int
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """One 80/20 re-split of the (P, Q, K) exact curves ``acc`` with (T, P, K) ``cost``:
    the training queries, the (T, P, K) training and test utilities and, per tier, the
    test utility of the arm an unlimited budget picks on the training queries."""
    queries = acc.shape[1]
    order = np.random.default_rng(seed).permutation(queries)
    n_test = round(0.2 * queries)
    test_q, train_q = order[:n_test], order[n_test:]
    u_train = acc[:, train_q].mean(axis=1)[None] - cost
    u_test = acc[:, test_q].mean(axis=1)[None] - cost
    oracle = np.array([u_test[t, p, k] for t, (p, k) in enumerate(best_arms(u_train))])
    return train_q, u_train, u_test, oracle


def best_arms(utility: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """Each tier's best (prompt, N index) of (T, P, K) utilities."""
    flat = utility.reshape(len(utility), -1).argmax(axis=1)
    return [(int(i) // utility.shape[2], int(i) % utility.shape[2]) for i in flat]


def share(
    picks: list[tuple[int, int]], u_test: npt.NDArray[np.float64], oracle: npt.NDArray[np.float64]
) -> float:
    """Mean over tiers of the picked arms' (prompt, N index) test utility over the oracle's."""
    got = np.array([u_test[t, p, k] for t, (p, k) in enumerate(picks)])
    return float((got / oracle).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(DATA))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument("--budgets", default="500,1000,3000,10000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tiers", default="economy=1.0,standard=0.2,premium=0")
    parser.add_argument("--n-max", type=int, default=32)
    parser.add_argument(
        "--paired",
        metavar="METHOD",
        help="also print each method's difference to METHOD, paired over seeds (± its SE)",
    )
    args = parser.parse_args()
    logging.getLogger("optimizer").setLevel(logging.ERROR)  # plan warnings: expected here
    table = load_table(args.table).merged()
    tiers = parse_tiers(args.tiers)
    lam = np.array([t.cost_weight for t in tiers])
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    acc = exact_accuracy(table, args.n_max)  # (P, Q, K) over all queries
    k = np.arange(1, args.n_max + 1)
    cost = lam[:, None, None] * table.cost_per_prompt[None, :, None] * k  # (T, P, K)

    shares: dict[tuple[str, int], list[float]] = {}
    spent: dict[tuple[str, int], list[int]] = {}
    seconds: dict[tuple[str, int], float] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        train_q, _, u_test, oracle = resplit(acc, cost, seed)
        train = RecordedTable(
            table.cat_probs[:, train_q], table.answers[train_q], table.cost_per_prompt
        )
        task = replay_task(train, tiers=tiers, n_max=args.n_max)
        for budget in budgets:
            for method in methods:
                rng = np.random.default_rng([seed, budget])
                sampler = ReplaySampler(train, rng)
                started = time.perf_counter()
                result = asyncio.run(optimize(task, sampler, budget, rng, method=method))
                key = (method, budget)
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
                picks = [(int(c.prompt.id), c.n - 1) for c in result.policy.tiers.values()]
                shares.setdefault(key, []).append(share(picks, u_test, oracle))
                spent.setdefault(key, []).append(sampler.samples_drawn)
        print(f"seed {seed} done", file=sys.stderr, flush=True)

    print(
        f"table {args.table}: {table.num_prompts} prompts, {table.num_queries} queries; "
        f"{args.seeds} seeds from {args.first_seed}, 80/20 re-splits; "
        f"tiers {args.tiers}; N_max {args.n_max}"
    )
    print(
        "share of the unlimited-budget choice's test utility (mean over tiers and seeds), "
        "± std over seeds; samples spent mean/max; mean seconds per run"
    )
    header = f"{'method':<15}" + "".join(f"{'B=' + str(b):>30}" for b in budgets)
    print(header)
    for method in methods:
        cells = []
        for b in budgets:
            s = np.array(shares[(method, b)]) * 100
            cells.append(
                f"{s.mean():6.2f}% ±{s.std():4.1f} {np.mean(spent[(method, b)]):6.0f}/"
                f"{max(spent[(method, b)]):<6d}{seconds[(method, b)] / args.seeds:5.2f}s"
            )
        print(f"{method:<15}" + "".join(f"{c:>30}" for c in cells))
    if args.paired in methods:
        print(f"difference to {args.paired} in points, paired over seeds, ± standard error")
        for method in methods:
            if method == args.paired:
                continue
            cells = []
            for b in budgets:
                d = (np.array(shares[(method, b)]) - np.array(shares[(args.paired, b)])) * 100
                se = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else float("nan")
                cells.append(f"{d.mean():+6.2f} ±{se:4.2f}")
            print(f"{method:<15}" + "".join(f"{c:>30}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
