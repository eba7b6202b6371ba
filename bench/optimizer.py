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
import json
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
    SampleBatch,
    load_table,
    optimize,
    replay_task,
)
from optimizer.exact import majority_credit_exact  # noqa: E402
from optimizer.sampling import Sampler  # noqa: E402
from policies.reward import RewardSpec  # noqa: E402
from policies.tasks import PromptCandidate, TaskSpec  # noqa: E402
from policies.tiers import Tier, parse_tiers  # noqa: E402

DATA = HERE.parent / ".." / "shared" / "data" / "MATH_final.npz"
CACHE = HERE / ".cache"
Array = npt.NDArray[np.float64]


def exact_accuracy(table: RecordedTable, n_max: int) -> Array:
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


class Bench:
    """A table to benchmark on: exact per-query quality for scoring, and for each
    re-split the training task and a sampler over the training queries only."""

    name: str
    tiers: tuple[Tier, ...]
    num_prompts: int
    num_queries: int
    cost_per_prompt: Array

    def quality(self, n_max: int) -> Array:
        """(T, P, Q, n_max) exact expected quality of every arm on every query."""
        raise NotImplementedError

    def train(self, queries: npt.NDArray[np.int64], n_max: int) -> tuple[TaskSpec, object]:
        """The task and the table restricted to ``queries`` (what a sampler replays)."""
        raise NotImplementedError

    def sampler(self, train: object, rng: np.random.Generator) -> Sampler:
        raise NotImplementedError


class MajorityBench(Bench):
    def __init__(self, name: str, table: RecordedTable, tiers: tuple[Tier, ...]) -> None:
        self.name, self.table, self.tiers = name, table.merged(), tiers
        self.num_prompts, self.num_queries = self.table.num_prompts, self.table.num_queries
        self.cost_per_prompt = self.table.cost_per_prompt

    def quality(self, n_max: int) -> Array:
        acc = exact_accuracy(self.table, n_max)
        return np.broadcast_to(acc[None], (len(self.tiers), *acc.shape))

    def train(self, queries: npt.NDArray[np.int64], n_max: int) -> tuple[TaskSpec, object]:
        t = self.table
        train = RecordedTable(t.cat_probs[:, queries], t.answers[queries], t.cost_per_prompt)
        return replay_task(train, tiers=self.tiers, n_max=n_max), train

    def sampler(self, train: object, rng: np.random.Generator) -> Sampler:
        assert isinstance(train, RecordedTable)
        return ReplaySampler(train, rng)


class GaussianRewardSampler:
    """Best-of-N samples of a Gaussian reward table: N(means[p, q], spread[p]²) per objective."""

    def __init__(self, means: Array, spread: Array, cost: Array, rng: np.random.Generator) -> None:
        self.means, self.spread, self.cost, self.rng = means, spread, cost, rng
        self.samples_drawn = 0

    @property
    def num_prompts(self) -> int:
        return int(self.means.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self.means.shape[1])

    @property
    def golds(self) -> tuple[None, ...]:
        return (None,) * self.num_queries

    async def sample(
        self, prompt_index: int, query_index: int, n: int, *, draw: int = 0
    ) -> SampleBatch:
        mean, sd = self.means[prompt_index, query_index], self.spread[prompt_index]
        rewards = mean + sd * self.rng.standard_normal((n, mean.size))
        self.samples_drawn += n
        return SampleBatch(
            answers=(None,) * n,
            costs=(float(self.cost[prompt_index]),) * n,
            rewards=tuple(tuple(r) for r in rewards.tolist()),
        )


class GaussianRewardBench(Bench):
    """The simulator's ``assist`` task: Gaussian rewards on two objectives."""

    def __init__(self, seed: int, queries: int) -> None:
        from iapo.simulator.exact import expected_max_standard_normal
        from iapo.simulator.synthetic import (
            REWARD_OBJECTIVES,
            REWARD_PROMPTS,
            REWARD_TIERS,
            synthetic_reward_table,
        )

        table = synthetic_reward_table(seed, train=queries, test=1)
        self.name, self.tiers, self.objectives = "assist", REWARD_TIERS, REWARD_OBJECTIVES
        self.prompt_texts = REWARD_PROMPTS
        self.means, self.spread = table.means, table.spread
        self.cost_per_prompt = table.cost_per_prompt
        self.num_prompts, self.num_queries = table.means.shape[:2]
        self._e = expected_max_standard_normal

    def quality(self, n_max: int) -> Array:
        from policies.aggregate import weight_vector

        out = []
        for tier in self.tiers:
            w = weight_vector(self.objectives, tier.objective_weights)
            mean = self.means @ w  # (P, Q)
            sd = np.sqrt((self.spread**2) @ (w**2))  # (P,)
            out.append(mean[:, :, None] + sd[:, None, None] * self._e(n_max)[None, None, :])
        return np.stack(out)

    def train(self, queries: npt.NDArray[np.int64], n_max: int) -> tuple[TaskSpec, object]:
        prompts = tuple(
            PromptCandidate(id=str(p), text=text) for p, text in enumerate(self.prompt_texts)
        )
        task = TaskSpec(
            name="assist",
            prompts=prompts,
            strategy="best_of_n",
            reward=RewardSpec(url="http://replay.invalid/v1/reward", objectives=self.objectives),
            tiers=self.tiers,
            n_max=n_max,
            default_tier=self.tiers[0].name,
        )
        return task, self.means[:, queries]

    def sampler(self, train: object, rng: np.random.Generator) -> Sampler:
        assert isinstance(train, np.ndarray)
        return GaussianRewardSampler(train, self.spread, self.cost_per_prompt, rng)


def open_bench(spec: str, tiers: tuple[Tier, ...]) -> Bench:
    """``assist[:QUERIES]`` (Gaussian Best-of-N), or a table file (either kind)."""
    if spec.startswith("assist"):
        _, _, queries = spec.partition(":")
        return GaussianRewardBench(7, int(queries or 200))
    table = load_table(spec)
    if isinstance(table, RecordedTable):
        return MajorityBench(spec, table, tiers)
    return BestOfNBench(spec, table, tiers)


class BestOfNBench(Bench):
    """A categorical Best-of-N table (``bon_outcomes``, ``bon_probs``)."""

    def __init__(self, name: str, table: object, tiers: tuple[Tier, ...]) -> None:
        self.name, self.table, self.tiers = name, table.merged(), tiers  # type: ignore[attr-defined]
        self.num_prompts, self.num_queries = self.table.num_prompts, self.table.num_queries
        self.cost_per_prompt = self.table.cost_per_prompt

    def quality(self, n_max: int) -> Array:
        from optimizer.exact import best_of_n_exact

        return np.stack(
            [
                best_of_n_exact(self.table.scores(t.objective_weights), self.table.bon_probs, n_max)
                for t in self.tiers
            ]
        )

    def train(self, queries: npt.NDArray[np.int64], n_max: int) -> tuple[TaskSpec, object]:
        train = self.table.take(queries)
        return replay_task(train, tiers=self.tiers, n_max=n_max), train

    def sampler(self, train: object, rng: np.random.Generator) -> Sampler:
        return ReplaySampler(train, rng)  # type: ignore[arg-type]


def resplit(
    quality: Array, cost: Array, seed: int
) -> tuple[npt.NDArray[np.int64], Array, Array, Array]:
    """One 80/20 re-split of the (T, P, Q, K) exact ``quality`` with (T, P, K) ``cost``:
    the training queries, the (T, P, K) training and test utilities and, per tier, the
    test utility of the arm an unlimited budget picks on the training queries."""
    queries = quality.shape[2]
    order = np.random.default_rng(seed).permutation(queries)
    n_test = round(0.2 * queries)
    test_q, train_q = order[:n_test], order[n_test:]
    u_train = quality[:, :, train_q].mean(axis=2) - cost
    u_test = quality[:, :, test_q].mean(axis=2) - cost
    oracle = np.array([u_test[t, p, k] for t, (p, k) in enumerate(best_arms(u_train))])
    return np.sort(train_q), u_train, u_test, oracle


def best_arms(utility: Array) -> list[tuple[int, int]]:
    """Each tier's best (prompt, N index) of (T, P, K) utilities."""
    flat = utility.reshape(len(utility), -1).argmax(axis=1)
    return [(int(i) // utility.shape[2], int(i) % utility.shape[2]) for i in flat]


def share(picks: list[tuple[int, int]], u_test: Array, oracle: Array) -> float:
    """Mean over tiers of the picked arms' (prompt, N index) test utility over the oracle's."""
    got = np.array([u_test[t, p, k] for t, (p, k) in enumerate(picks)])
    return float((got / oracle).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--table",
        default=str(DATA),
        help="a recorded table (.npz, majority or Best-of-N), or assist[:QUERIES] (Gaussian)",
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument("--budgets", default="500,1000,3000,10000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--tiers",
        default="economy=1.0,standard=0.2,premium=0",
        help="cost weights (ignored by assist, which has its own tiers)",
    )
    parser.add_argument("--n-max", type=int, default=32)
    parser.add_argument(
        "--paired",
        metavar="METHOD",
        help="also print each method's difference to METHOD, paired over seeds (± its SE)",
    )
    parser.add_argument("--dump", help="write every run's share to this JSON file")
    args = parser.parse_args()
    logging.getLogger("optimizer").setLevel(logging.ERROR)  # plan warnings: expected here
    bench = open_bench(args.table, parse_tiers(args.tiers))
    tiers = bench.tiers
    lam = np.array([t.cost_weight for t in tiers])
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    quality = bench.quality(args.n_max)  # (T, P, Q, K) over all queries
    k = np.arange(1, args.n_max + 1)
    cost = lam[:, None, None] * bench.cost_per_prompt[None, :, None] * k  # (T, P, K)

    shares: dict[tuple[str, int], list[float]] = {}
    spent: dict[tuple[str, int], list[int]] = {}
    seconds: dict[tuple[str, int], float] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        train_q, _, u_test, oracle = resplit(quality, cost, seed)
        task, train = bench.train(train_q, args.n_max)
        for budget in budgets:
            for method in methods:
                rng = np.random.default_rng([seed, budget])
                sampler = bench.sampler(train, rng)
                started = time.perf_counter()
                result = asyncio.run(optimize(task, sampler, budget, rng, method=method))
                key = (method, budget)
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
                picks = [(int(c.prompt.id), c.n - 1) for c in result.policy.tiers.values()]
                shares.setdefault(key, []).append(share(picks, u_test, oracle))
                spent.setdefault(key, []).append(result.spent)
        print(f"seed {seed} done", file=sys.stderr, flush=True)

    print(
        f"table {args.table}: {bench.num_prompts} prompts, {bench.num_queries} queries; "
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
    if args.dump:
        rows = [
            {
                "method": m,
                "budget": b,
                "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
                "shares": v,
            }
            for (m, b), v in shares.items()
        ]
        Path(args.dump).write_text(json.dumps({"table": args.table, "runs": rows}))
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
