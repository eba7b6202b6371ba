"""How much selection quality a recorded table allows at all (the ceilings behind
``bench/optimizer.py``'s figures), under the same protocol: 80/20 re-splits, a tier's
score is its chosen arm's test utility as a share of that of the arm an unlimited
budget would pick on the 80%, averaged over tiers and seeds.

- ``rank r``: deploy the r-th best prompt on the 80% (at its best N there): how
  forgiving the measure is of a near-miss;
- ``exact on m queries``: choose with the exact utilities of m random training
  queries, no sampling noise: the ceiling of any method that sees m queries;
- ``screened c, METHOD at B``: METHOD with budget B on the union of every tier's true
  top c prompts only, as if a screen had cost nothing and never erred;
- ``METHOD at B, exact pair curves``: METHOD's own run (the same halving, the same
  queries), but every (prompt, query) it has sampled is valued by its exact curve
  instead of the estimate from its few samples: what the allocation would reach with
  a perfect per-pair estimator. Where this is near 100% and the method is not, the
  loss is the noise of the samples themselves, not where they were spent.

    .venv/bin/python bench/optimizer_bounds.py --seeds 100 --first-seed 100
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from optimizer import RecordedTable, ReplaySampler, load_table, optimize, replay_task  # noqa: E402
from optimizer.estimators import VoteEstimator  # noqa: E402
from policies.tasks import TaskSpec  # noqa: E402
from policies.tiers import parse_tiers  # noqa: E402

# bench/optimizer.py's table cache, loaded under another name (its own would shadow the package)
_spec = importlib.util.spec_from_file_location("bench_optimizer", HERE / "optimizer.py")
assert _spec is not None
assert _spec.loader is not None
_quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_quality)
DATA, exact_accuracy, resplit = _quality.DATA, _quality.exact_accuracy, _quality.resplit
best_arms, share = _quality.best_arms, _quality.share

Array = npt.NDArray[np.float64]


@contextmanager
def exact_pair_curves(curves: Array) -> Iterator[None]:
    """While active, every majority-vote estimator values a sampled (prompt, query) by its
    exact (K,) curve ``curves[prompt, query]`` (queries indexed as the run sees them)."""

    def refresh(self: VoteEstimator) -> None:
        self._dirty = set()
        self._curves = curves[np.asarray(self._pair_prompt), np.asarray(self._pair_query)]

    original = VoteEstimator._refresh
    VoteEstimator._refresh = refresh  # type: ignore[method-assign]
    try:
        yield
    finally:
        VoteEstimator._refresh = original  # type: ignore[method-assign]


def run_picks(
    task: TaskSpec, train: RecordedTable, seed: int, budget: int, method: str
) -> list[tuple[int, int]]:
    """(prompt, N index) per tier of one replay run, prompts as the table's indices."""
    rng = np.random.default_rng([seed, budget])
    result = asyncio.run(optimize(task, ReplaySampler(train, rng), budget, rng, method=method))
    return [(int(c.prompt.id), c.n - 1) for c in result.policy.tiers.values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(DATA))
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--tiers", default="economy=1.0,standard=0.2,premium=0")
    parser.add_argument("--n-max", type=int, default=32)
    parser.add_argument("--method", default="pooled-halving")
    parser.add_argument("--budgets", default="1000,3000")
    args = parser.parse_args()
    logging.getLogger("optimizer").setLevel(logging.ERROR)
    table = load_table(args.table).merged()
    tiers = parse_tiers(args.tiers)
    lam = np.array([t.cost_weight for t in tiers])
    acc = exact_accuracy(table, args.n_max)
    cost = lam[:, None, None] * table.cost_per_prompt[None, :, None] * np.arange(1, args.n_max + 1)
    budgets = [int(b) for b in args.budgets.split(",")]

    rows: dict[str, list[float]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        quality = np.broadcast_to(acc[None], (len(tiers), *acc.shape))
        train_q, u_train, u_test, oracle = resplit(quality, cost, seed)

        ranked = np.argsort(-u_train.max(axis=2), axis=1)  # (T, P): prompts best first
        for r in (1, 2, 3, 4, 6, 8):
            picks = [
                (int(ranked[t, r - 1]), int(np.argmax(u_train[t, ranked[t, r - 1]])))
                for t in range(len(tiers))
            ]
            rows.setdefault(f"rank {r} prompt, its best N", []).append(share(picks, u_test, oracle))
        rng = np.random.default_rng([seed, 1])
        for m in (25, 50, 100, 150):
            sub = rng.choice(train_q, size=m, replace=False)
            picks = best_arms(acc[:, sub].mean(axis=1)[None] - cost)
            rows.setdefault(f"exact on {m} queries", []).append(share(picks, u_test, oracle))
        for top in (3, 5):
            keep = np.unique(ranked[:, :top])
            train = RecordedTable(
                table.cat_probs[keep][:, train_q],
                table.answers[train_q],
                table.cost_per_prompt[keep],
            )
            task = replay_task(train, tiers=tiers, n_max=args.n_max)
            for budget in budgets:
                picks = run_picks(task, train, seed, budget, args.method)
                rows.setdefault(f"screened {top}, {args.method} at B={budget}", []).append(
                    share([(int(keep[p]), k) for p, k in picks], u_test, oracle)
                )
        full = RecordedTable(
            table.cat_probs[:, train_q], table.answers[train_q], table.cost_per_prompt
        )
        full_task = replay_task(full, tiers=tiers, n_max=args.n_max)
        for budget in budgets:
            with exact_pair_curves(acc[:, train_q]):
                picks = run_picks(full_task, full, seed, budget, args.method)
            rows.setdefault(f"{args.method} at B={budget}, exact pair curves", []).append(
                share(picks, u_test, oracle)
            )
        print(f"seed {seed} done", file=sys.stderr, flush=True)

    print(
        f"table {args.table}: {args.seeds} seeds from {args.first_seed}, 80/20 re-splits; "
        f"tiers {args.tiers}; share of the unlimited-budget choice's test utility"
    )
    for name, values in rows.items():
        v = np.array(values) * 100
        print(f"{name:<38} {v.mean():7.2f}% ± {v.std(ddof=1) / np.sqrt(v.size):4.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
