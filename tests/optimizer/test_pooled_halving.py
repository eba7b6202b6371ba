from __future__ import annotations

import numpy as np

from iapo.simulator.generate import categorical_bon_table
from optimizer import Pull, ReplaySampler, VoteEstimator, make_run, optimize, replay_task
from optimizer._bayes import _grid, _likelihood_sym
from optimizer.estimators import AveragedEstimator
from optimizer.exact import best_of_n_exact, majority_credit_exact
from optimizer.methods import METHODS
from policies.table import BestOfNTable
from policies.tiers import Tier

from .conftest import late_bloomer_table, random_table, shared_trap_table

PREMIUM = (Tier("premium", cost_weight=0.0),)
TIERS = (Tier("economy", cost_weight=1.0), Tier("premium", cost_weight=0.0))


def test_symmetric_likelihood_lets_any_wrong_answer_explain_a_lone_wrong_vote() -> None:
    grid = _grid()
    log_grid = np.log(np.maximum(grid, 1e-4))
    g, w1, w2, r = np.maximum(grid, 1e-4).T
    rows = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0], [0, 1, 1, 0]], dtype=np.float64)
    like = _likelihood_sym(rows, log_grid)
    expected = [g, w1 + w2 + r, w1**2 + w2**2, 2 * (w1 * w2 + w1 * r + w2 * r) + r * r]
    for row, want in zip(like, expected, strict=True):
        np.testing.assert_allclose(row, want / want.max(), rtol=1e-9)


def test_symmetric_prior_is_not_pessimistic_about_spread_wrong_answers() -> None:
    """Mostly single samples of a prompt whose wrong answers spread thin: its N=16
    credit is near 1. Scoring a lone wrong vote as the top wrong answer drags the
    estimate far down; the symmetric likelihood gets much closer."""
    rng = np.random.default_rng(0)
    probs = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    truth = majority_credit_exact(probs[None, None], np.array([0]), 16)[0, 0, -1]
    pulls = []
    for q in range(300):
        n = 4 if q < 30 else 1
        pulls.append(Pull(0, q, rng.choice(5, size=n, p=probs), np.ones(n)))
    got = {}
    for model, symmetric in (("eb", False), ("eb-s", True)):
        est = VoteEstimator(1, 16, [0.0], symmetric=symmetric)
        est.add(pulls)
        got[model] = float(est.estimate().quality[0, 0, -1])
    assert truth > 0.95
    assert abs(got["eb-s"] - truth) < 0.15, got
    assert truth - got["eb"] > 2 * abs(got["eb-s"] - truth), got


async def test_majority_design_spends_its_wide_pulls_and_exactly_its_budget(seed: int) -> None:
    table = late_bloomer_table()
    rng = np.random.default_rng(seed)
    task = replay_task(table, tiers=TIERS, n_max=16)
    sampler = ReplaySampler(table, rng)
    run, plan = make_run(task, sampler, 2000, rng, method="pooled-halving")
    assert plan.samples == 2000
    sizes: list[int] = []
    original = run.spend

    async def spy(pulls: list[tuple[int, int]]) -> None:
        sizes.extend(n for _, n in pulls)
        await original(pulls)

    run.spend = spy  # type: ignore[method-assign]
    await optimize(task, sampler, 2000, rng, method="pooled-halving", run=(run, plan))
    assert sum(sizes) == sampler.samples_drawn == 2000
    large = sum(n for n in sizes if n == 4)
    # about a tenth of every round goes to pulls of 4, the rest to single samples
    assert 0.05 * 2000 <= large <= 0.12 * 2000, large
    assert set(sizes) <= {1, 4}


def test_averaged_estimator_is_the_mean_of_its_parts_over_separate_copies() -> None:
    rng = np.random.default_rng(0)
    pulls = [
        Pull(p, q, rng.integers(0, 3, size=2), np.ones(2)) for p in range(3) for q in range(20)
    ]
    sym = VoteEstimator(3, 8, [0.0, 1.0], symmetric=True)
    sym.add(pulls)
    plain = sym.remodel(symmetric=False)
    both = AveragedEstimator([sym, plain])
    got, a, b = both.estimate(), sym.estimate(), plain.estimate()
    np.testing.assert_allclose(got.quality, (a.quality + b.quality) / 2)
    np.testing.assert_allclose(got.utility, (a.utility + b.utility) / 2)
    assert not np.allclose(a.quality, b.quality)  # the two models do differ
    # the copy owns its samples: adding through the average reaches each part once
    both.add([Pull(0, 99, np.zeros(4, dtype=np.int64), np.ones(4))])
    assert sym.estimate().observations[0, 0] == plain.estimate().observations[0, 0] == 21


def test_shared_finalists_open_every_tiers_finalists_to_every_tier_within_its_caps() -> None:
    tiers = (*TIERS, Tier("capped", cost_weight=0.0, max_n=4))
    table = late_bloomer_table()
    rng = np.random.default_rng(0)
    run, _ = make_run(
        replay_task(table, tiers=tiers, n_max=16), ReplaySampler(table, rng), 100, rng
    )
    active = np.zeros((3, table.num_prompts, 16), dtype=bool)
    active[0, 2] = True  # economy kept prompt 2, premium 7 and 9, the capped tier 9
    active[1, [7, 9]] = True
    active[2, 9, :4] = True
    shared = run.shared_finalists(active)
    for t, cap in enumerate((16, 16, 4)):
        assert shared[t].any(axis=1).nonzero()[0].tolist() == [2, 7, 9]
        assert shared[t][[2, 7, 9], :cap].all()
        assert not shared[t][:, cap:].any()


async def test_pooled_halving_ends_on_the_shared_finalists(seed: int) -> None:
    table = late_bloomer_table()
    rng = np.random.default_rng(seed)
    task = replay_task(table, tiers=TIERS, n_max=16)
    run, _ = make_run(task, ReplaySampler(table, rng), 2000, rng, method="pooled-halving")
    halved: list[np.ndarray] = []
    halving = run.halving

    async def spy(*args: object, **kwargs: object) -> np.ndarray:
        halved.append(await halving(*args, **kwargs))  # type: ignore[arg-type]
        return halved[-1]

    run.halving = spy  # type: ignore[method-assign]
    final = await METHODS["pooled-halving"].run(run)
    assert len(halved) == 1
    np.testing.assert_array_equal(final, run.shared_finalists(halved[0]), err_msg=f"seed {seed}")


def test_the_late_bloomer_table_is_what_it_claims() -> None:
    table = late_bloomer_table()
    acc = majority_credit_exact(table.cat_probs, table.answers, 16).mean(axis=1)
    assert int(np.argmax(acc[:, 0])) == 2
    assert int(np.argmax(acc[:, 15])) == 7
    economy = acc - 1.0 * 0.02 * np.arange(1, 17)
    assert np.unravel_index(int(np.argmax(economy)), economy.shape)[0] == 2


async def test_pooled_halving_finds_each_tiers_right_arm(seed: int) -> None:
    method = "pooled-halving"
    budget = 4000
    table = late_bloomer_table()
    rng = np.random.default_rng(seed)
    task = replay_task(table, tiers=TIERS, n_max=16)
    sampler = ReplaySampler(table, rng)
    result = await optimize(task, sampler, budget, rng, method=method)
    assert sampler.samples_drawn == result.spent == budget
    acc = majority_credit_exact(table.cat_probs, table.answers, 16).mean(axis=1)
    for tier in TIERS:
        utility = acc - tier.cost_weight * 0.02 * np.arange(1, 17)
        choice = result.policy.tiers[tier.name]
        got = utility[int(choice.prompt.id), choice.n - 1]
        assert got >= utility.max() - 0.02, f"{tier.name}: {choice.prompt.id}@{choice.n}, {seed}"
    assert result.policy.tiers["premium"].prompt.id == "7", f"seed {seed}"
    assert result.policy.tiers["premium"].n >= 7


async def test_pooled_halving_finds_the_large_n_winner_among_shared_traps(seed: int) -> None:
    method = "pooled-halving"
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


async def test_pooled_halving_spends_exactly_its_budget_on_small_tables(seed: int) -> None:
    # Edge cases on purpose: budgets below one wide pull per prompt, one prompt,
    # N_max 1, tier caps.
    rng = np.random.default_rng(seed)
    tiers = (Tier("a", cost_weight=1.0), Tier("b", max_n=3))
    for prompts, n_max, budget in [(1, 4, 7), (6, 1, 5), (6, 12, 3), (5, 8, 37), (3, 12, 400)]:
        table = random_table(rng, prompts, 8, 3)
        task = replay_task(table, tiers=tiers, n_max=n_max)
        sampler = ReplaySampler(table, rng)
        run = make_run(task, sampler, budget, rng, method="pooled-halving")
        assert run[1].samples == budget
        result = await optimize(task, sampler, budget, rng, method="pooled-halving", run=run)
        assert sampler.samples_drawn == result.spent == budget, (prompts, n_max, budget)
        assert result.policy.tiers["b"].n <= 3


def late_peaking_bon_table(queries: int = 80) -> BestOfNTable:
    """Best-of-N, one objective. Prompt 0: steady (0.6 or 0.65), best at N=1;
    prompt 1: usually 0.3-0.5, rarely (3%) 1.0, so its best of N keeps rising up to
    N=32 and wins there; prompt 2: poor everywhere."""
    values = np.zeros((3, queries, 4, 1))
    probs = np.zeros((3, queries, 4))
    values[0, :, :, 0] = [0.6, 0.65, 0.6, 0.65]
    probs[0] = 0.25
    values[1, :, :, 0] = [0.3, 0.4, 0.5, 1.0]
    probs[1] = [0.32, 0.33, 0.32, 0.03]
    values[2, :, :, 0] = [0.2, 0.3, 0.4, 0.5]
    probs[2] = 0.25
    return BestOfNTable(values, probs, ("reward",), np.full(3, 0.001))


def test_the_late_peaking_bon_table_is_what_it_claims() -> None:
    table = late_peaking_bon_table()
    quality = best_of_n_exact(table.scores(None), table.bon_probs, 32).mean(axis=1)
    assert int(np.argmax(quality[:, 0])) == 0
    assert int(np.argmax(quality[:, 31])) == 1
    assert quality[1, 31] - quality[1, 15] > 0.1  # still rising past N=16


async def test_best_of_n_chooses_n_up_to_n_max_when_it_pays(seed: int) -> None:
    table = late_peaking_bon_table()
    rng = np.random.default_rng(seed)
    tiers = (Tier("economy", cost_weight=20.0), Tier("premium", cost_weight=0.0))
    task = replay_task(table, tiers=tiers, n_max=32)
    assert task.strategy == "best_of_n"
    sampler = ReplaySampler(table, rng)
    result = await optimize(task, sampler, 3000, rng)
    assert sampler.samples_drawn == result.spent == 3000
    premium = result.policy.tiers["premium"]
    assert premium.prompt.id == "1", f"seed {seed}"
    assert premium.n >= 28, f"premium chose N={premium.n} (seed {seed})"
    # At 0.02 of utility per sample, the steady prompt at small N is worth more.
    economy = result.policy.tiers["economy"]
    assert economy.prompt.id == "0", f"seed {seed}"
    assert economy.n <= 3, f"economy chose N={economy.n} (seed {seed})"


async def test_best_of_n_spends_exactly_its_budget_on_small_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tiers = (Tier("a", cost_weight=1.0), Tier("b", max_n=3))
    for prompts, n_max, budget in [(1, 4, 7), (6, 1, 5), (6, 12, 3), (5, 8, 37), (3, 12, 400)]:
        table = categorical_bon_table(int(rng.integers(1 << 16)), prompts=prompts, queries=8)
        task = replay_task(table, tiers=tiers, n_max=n_max)
        sampler = ReplaySampler(table, rng)
        run = make_run(task, sampler, budget, rng)
        assert run[1].samples == budget
        result = await optimize(task, sampler, budget, rng, run=run)
        assert sampler.samples_drawn == result.spent == budget, (prompts, n_max, budget)
        assert result.policy.tiers["b"].n <= 3


def test_plan_says_how_best_of_n_pulls_are_sized() -> None:
    # 20 prompts, B=1000, 5 rounds: round 1's 200 samples give each prompt two queries
    # at N=5 (not one pull of 10 on a single query); 4 prompts at B=800 (2 rounds): full
    # pulls at N_max, three each.
    rng = np.random.default_rng(0)
    for prompts, budget, expected in ((20, 1000, (20, 2, 5)), (4, 800, (4, 3, 32))):
        table = categorical_bon_table(0, prompts=prompts, queries=50)
        task = replay_task(table, n_max=32)
        _, plan = make_run(task, ReplaySampler(table, rng), budget, rng)
        (phase,) = plan.phases
        assert phase.first_pulls == expected, (prompts, phase.first_pulls)
        assert "at least 2 queries per prompt a round" in phase.name
        assert not plan.warnings
