"""The replay sampler and replay task on both kinds of table."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer import BestOfNTable, ReplaySampler, best_of_n_exact, optimize, replay_task
from policies import ConfigError, Tier
from policies.table import replay_prompt_texts

from .conftest import random_table


def _bon_table(rng: np.random.Generator, prompts: int = 3, queries: int = 20) -> BestOfNTable:
    return BestOfNTable(
        rng.uniform(size=(prompts, queries, 4, 2)),
        rng.dirichlet(np.ones(4), size=(prompts, queries)),
        ("helpfulness", "harmlessness"),
        np.linspace(0.01, 0.03, prompts),
    )


def test_best_of_n_samples_carry_their_outcome_vectors(rng: np.random.Generator, seed: int) -> None:
    table = _bon_table(rng)
    sampler = ReplaySampler(table, np.random.default_rng(seed))
    assert list(sampler.golds) == [None] * 20
    batch = sampler.sample_now(2, 7, 5000)
    assert sampler.samples_drawn == 5000
    assert batch.rewards is not None
    assert len(batch.rewards) == 5000
    assert batch.costs == (table.cost_per_prompt[2],) * 5000
    for answer, reward in zip(batch.answers[:50], batch.rewards[:50], strict=True):
        assert answer is not None
        assert reward == tuple(table.bon_outcomes[2, 7, int(answer)])
    shares = np.bincount([int(a) for a in batch.answers if a is not None], minlength=4) / 5000
    np.testing.assert_allclose(shares, table.bon_probs[2, 7], atol=0.03, err_msg=f"seed {seed}")


def test_majority_samples_have_golds_and_no_rewards(rng: np.random.Generator) -> None:
    table = random_table(rng, 3, 10, 4)
    sampler = ReplaySampler(table, rng)
    batch = sampler.sample_now(0, 3, 8)
    assert batch.rewards is None
    assert sampler.golds[3] == str(table.answers[3])


def test_replay_tasks_match_the_table_kind(rng: np.random.Generator) -> None:
    bon = replay_task(_bon_table(rng), name="chat")
    assert bon.strategy == "best_of_n"
    assert bon.reward is not None
    assert bon.reward.objectives == ("helpfulness", "harmlessness")
    assert [p.text for p in bon.prompts] == list(replay_prompt_texts(_bon_table(rng)))
    majority = replay_task(random_table(rng, 3, 10, 4))
    assert majority.strategy == "majority"
    assert majority.extractor.kind == "boxed"
    assert [p.id for p in majority.prompts] == ["0", "1", "2"]
    with pytest.raises(ConfigError, match="unknown objectives"):
        replay_task(_bon_table(rng), tiers=(Tier("x", objective_weights={"honesty": 1.0}),))


async def test_optimize_on_a_best_of_n_table_finds_the_best_arm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = _bon_table(rng, prompts=4, queries=40)
    # prompt 3 dominates: every outcome of it beats every outcome of the others
    outcomes = table.bon_outcomes.copy()
    outcomes[3] += 2.0
    table = BestOfNTable(outcomes, table.bon_probs, table.objectives, np.full(4, 0.001))
    tiers = (Tier("premium", cost_weight=0.0),)
    task = replay_task(table, tiers=tiers, n_max=8)
    result = await optimize(task, ReplaySampler(table, rng), 600, rng)
    choice = result.policy.tiers["premium"]
    assert choice.strategy == "best_of_n"
    assert choice.prompt.id == "3", f"seed {seed}"
    exact = best_of_n_exact(table.scores(None), table.bon_probs, 8).mean(axis=1)
    assert exact[3, choice.n - 1] >= exact[:3].max()
    assert result.spent <= 600
