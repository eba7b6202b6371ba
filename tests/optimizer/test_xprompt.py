from __future__ import annotations

import numpy as np
import pytest

from optimizer import PooledEstimator, Pull, RecordedTable, ReplaySampler, optimize, replay_task
from optimizer.exact import majority_credit_exact
from optimizer.xprompt import borrowed
from policies.tiers import Tier

PREMIUM = (Tier("premium", cost_weight=0.0),)


def test_borrowed_votes_are_the_other_prompts_on_the_same_query() -> None:
    # rows: (prompt 0, query 5), (prompt 1, query 5), (prompt 0, query 7)
    counts = np.array([[1, 2, 0], [0, 4, 1], [3, 0, 0]])
    got = borrowed(counts, [5, 5, 7], np.arange(3), weight=0.5, cap=10.0)
    np.testing.assert_allclose(got[0], [0.0, 2.0, 0.5])  # half of row 1's votes
    np.testing.assert_allclose(got[1], [0.5, 1.0, 0.0])  # half of row 0's
    np.testing.assert_allclose(got[2], [0.0, 0.0, 0.0])  # nobody else on query 7
    capped = borrowed(counts, [5, 5, 7], np.arange(3), weight=0.5, cap=1.0)
    assert capped[0].sum() == 1.0  # 5 votes at 0.5 would be 2.5: the cap holds
    np.testing.assert_allclose(capped[0], [0.0, 0.8, 0.2])


def test_other_prompts_trap_answer_lowers_a_one_sample_estimate() -> None:
    """One gold sample of prompt 0 on a query where other prompts pile onto one wrong
    answer is worth less at large N than on a query where they agree on gold."""
    rng = np.random.default_rng(0)
    est = PooledEstimator(4, 16, [0.0], rng, model="eb-x")
    base = PooledEstimator(4, 16, [0.0], np.random.default_rng(0))
    pulls = []
    for q in range(40):
        trap = q % 2 == 1
        pulls.append(Pull(0, q, np.array([0]), np.array([1.0])))
        for p in (1, 2, 3):
            codes = np.array([1, 1, 1, 0] if trap else [0, 0, 0, 1])
            pulls.append(Pull(p, q, codes, np.ones(4)))
    est.add(pulls)
    base.add(pulls)
    # Prompt 0's curves per query: compare the pair estimates on trap and clean queries.
    est.estimate()
    base.estimate()
    rows = [i for i, p in enumerate(est._pair_prompt) if p == 0]
    trap = np.array([est._pair_query[i] % 2 == 1 for i in rows])
    with_borrow = est._curves[rows, 0, -1]
    without = base._curves[rows, 0, -1]
    assert with_borrow[trap].mean() < with_borrow[~trap].mean() - 0.1
    # without borrowing, one gold sample is one gold sample, wherever it was drawn
    np.testing.assert_allclose(without[trap], without[~trap])


def shared_trap_table(rng: np.random.Generator, queries: int = 50) -> RecordedTable:
    """5 prompts; every query has one trap answer that all prompts fall into, to a
    different degree. Prompt 3 is best at large N (its trap mass is always below gold),
    prompt 0 best at N=1 (more gold, but on a third of the queries the trap beats it)."""
    probs = np.zeros((5, queries, 5))
    hard = rng.random(queries) < 0.33
    probs[0] = [0.7, 0.3, 0.0, 0.0, 0.0]
    probs[0, hard] = [0.35, 0.65, 0.0, 0.0, 0.0]
    probs[1] = [0.4, 0.45, 0.05, 0.05, 0.05]
    probs[2] = [0.3, 0.4, 0.1, 0.1, 0.1]
    probs[3] = [0.5, 0.2, 0.1, 0.1, 0.1]
    probs[4] = [0.45, 0.5, 0.05, 0.0, 0.0]
    return RecordedTable(probs, np.zeros(queries, dtype=np.int64), np.full(5, 0.01))


@pytest.mark.parametrize("method", ["sh-xprompt", "sh-mixed"])
async def test_single_sample_halving_finds_the_large_n_winner_among_shared_traps(
    seed: int, method: str
) -> None:
    rng = np.random.default_rng(seed)
    table = shared_trap_table(rng)
    acc = majority_credit_exact(table.cat_probs, table.answers, 16).mean(axis=1)
    assert int(np.argmax(acc[:, 0])) == 0
    assert int(np.argmax(acc[:, 15])) == 3
    task = replay_task(table, tiers=PREMIUM, n_max=16)
    sampler = ReplaySampler(table, rng)
    result = await optimize(task, sampler, 4000, rng, method=method)
    choice = result.policy.tiers["premium"]
    assert sampler.samples_drawn == 4000
    assert choice.prompt.id == "3", f"chose {choice.prompt.id} (seed {seed})"
    assert acc[3, choice.n - 1] >= acc[3].max() - 0.03, f"N={choice.n} (seed {seed})"
