"""Best-of-N live runs scored by a vLLM reward model (``/pooling``, ``/score``) and the
iapo contract, through the client the proxy uses; unscored samples; resuming."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from optimizer import HttpSampler, OptimizationResult, SampleCache, optimize
from policies.errors import SamplingError
from policies.reward import RewardSpec
from policies.tasks import TaskSpec
from policies.tiers import Tier

from .test_live import ROWS, TASK, Scripted, upstream

BUDGET = 160


def bon_task(reward: RewardSpec) -> TaskSpec:
    return TaskSpec(
        name="bon",
        prompts=TASK.prompts,
        strategy="best_of_n",
        reward=reward,
        n_max=4,
        tiers=(Tier("premium", objective_weights={reward.objectives[0]: 1.0}),),
        default_tier="premium",
    )


def candidate_reward(text: str) -> float:
    """Longer answers score higher: "spread" gains from N (45% 4-digit wrong answers)."""
    return float(len(text))


class RewardModel:
    """A scripted vLLM reward model: ``/pooling`` one conversation per call (a value per
    token, the last one counts) and ``/score`` (a cross-encoder). Candidates whose answer
    is in ``refuse`` get a 400, as vLLM answers a conversation too long for the model."""

    def __init__(self, refuse: tuple[str, ...] = (), down: bool = False) -> None:
        self.bodies: list[dict[str, object]] = []
        self.refused = 0
        self.refuse = refuse
        self.down = down

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.down:
            return httpx.Response(503, json={"error": {"message": "loading"}})
        if request.url.path.endswith("/score"):
            pairs = list(enumerate(body["text_2"]))[::-1]  # out of order: index says which
            data = [{"index": i, "score": candidate_reward(c)} for i, c in pairs]
            return httpx.Response(200, json={"data": data})
        candidate = body["messages"][-1]["content"]
        if any(f"is {answer}." in candidate for answer in self.refuse):
            self.refused += 1
            return httpx.Response(400, json={"error": {"message": "too long"}})
        value = candidate_reward(candidate)
        return httpx.Response(200, json={"data": [{"index": 0, "data": [[0.0], [value]]}]})


def routed(upstream_handler: Scripted, reward_handler: RewardModel) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "rm.test":
            return reward_handler(request)
        return upstream_handler(request)

    return httpx.MockTransport(handler)


async def run(
    task: TaskSpec,
    upstream_handler: Scripted,
    reward_handler: RewardModel,
    seed: int,
    cache: SampleCache | None = None,
) -> tuple[OptimizationResult, HttpSampler]:
    async def no_sleep(_: float) -> None:
        return None

    transport = routed(upstream_handler, reward_handler)
    async with httpx.AsyncClient(transport=transport) as client:
        sampler = HttpSampler(
            task, upstream(), ROWS, client=client, run_key="r1", cache=cache, sleep=no_sleep
        )
        result = await optimize(task, sampler, BUDGET, np.random.default_rng(seed))
    return result, sampler


async def test_a_vllm_pooling_reward_scores_each_candidate_as_the_assistant_turn(
    seed: int,
) -> None:
    task = bon_task(
        RewardSpec(url="http://rm.test/pooling", kind="vllm", model="rm", objectives=("reward",))
    )
    scripted, model = Scripted(), RewardModel(refuse=("1003",))
    result, sampler = await run(task, scripted, model, seed)

    assert result.spent == scripted.served == BUDGET
    questions = {row.question for row in ROWS}
    systems = {prompt.text for prompt in TASK.prompts}
    for body in model.bodies:  # one conversation per call, the candidate as its last turn
        assert body["model"] == "rm"
        system, user, answer = body["messages"]
        assert system["role"] == "system"
        assert system["content"] in systems
        assert user["role"] == "user"
        assert user["content"] in questions
        assert answer["role"] == "assistant"
        assert answer["content"].startswith("Let me think.")
        assert set(body) == {"model", "messages"}
    assert len(model.bodies) == BUDGET, "one call per candidate; a 400 is not retried"
    assert model.refused > 0, f"seed {seed}: no candidate answered 1003"
    assert sampler.unscored == model.refused, "a refused candidate stays unscored"
    assert sampler.scored + sampler.unscored == BUDGET
    premium = result.policy.tiers["premium"]
    assert premium.strategy == "best_of_n"
    assert premium.prompt.id == "spread", f"seed {seed}"
    assert result.policy.reward == task.reward


async def test_a_vllm_score_reward_gets_the_question_and_the_candidates(seed: int) -> None:
    task = bon_task(RewardSpec(url="http://rm.test/v1/score", kind="vllm", objectives=("rm",)))
    scripted, model = Scripted(), RewardModel()
    result, sampler = await run(task, scripted, model, seed)

    questions = {row.question for row in ROWS}
    assert all(set(body) == {"text_1", "text_2"} for body in model.bodies)  # no model: none sent
    assert all(body["text_1"] in questions for body in model.bodies)
    assert sum(len(body["text_2"]) for body in model.bodies) == BUDGET
    assert len(model.bodies) < BUDGET, "one call per pull, not per candidate"
    assert sampler.scored == BUDGET
    assert sampler.unscored == 0
    premium = result.policy.tiers["premium"]
    assert premium.prompt.id == "spread", f"seed {seed}"
    assert premium.n >= 3, f"seed {seed}"


async def test_a_reward_service_that_is_down_stops_the_run_and_a_rerun_pays_only_for_scores(
    tmp_path: Path, seed: int
) -> None:
    task = bon_task(RewardSpec(url="http://rm.test/pooling", kind="vllm"))
    async with await SampleCache.open(tmp_path / "samples.sqlite") as cache:
        first = Scripted()
        with pytest.raises(SamplingError, match="reward service: gave up after 3 attempt"):
            await run(task, first, RewardModel(down=True), seed, cache)
        # The round's other pulls are not cancelled when one fails: let them end first.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*others, return_exceptions=True)
        stored = await cache.count("r1")
        assert 0 < stored == first.served, "what was paid for is cached, unscored"

        second, model = Scripted(), RewardModel()
        resumed, sampler = await run(task, second, model, seed, cache)
        assert sampler.cached == stored
        assert sampler.paid == second.served == BUDGET - stored, "nothing is paid twice"
        assert len(model.bodies) == sampler.scored == BUDGET, "the cached samples get scored"

        third, again = Scripted(), RewardModel()
        rerun, sampler = await run(task, third, again, seed, cache)
        assert third.served == sampler.paid == 0
        assert again.bodies == [], "stored scores are read back, not asked for again"
        assert sampler.scored == 0
        assert sampler.cached == BUDGET

        other_model = bon_task(RewardSpec(url="http://rm.test/pooling", kind="vllm", model="rm2"))
        fourth, rescoring = Scripted(), RewardModel()
        _, sampler = await run(other_model, fourth, rescoring, seed, cache)
        assert fourth.served == 0, "another reward model re-scores; it does not re-sample"
        assert len(rescoring.bodies) == sampler.scored == BUDGET
        assert {b["model"] for b in rescoring.bodies} == {"rm2"}
    straight, _ = await run(task, Scripted(), RewardModel(), seed)
    for result in (resumed, rerun):
        assert {k: (t.prompt.id, t.n) for k, t in result.policy.tiers.items()} == {
            k: (t.prompt.id, t.n) for k, t in straight.policy.tiers.items()
        }


async def test_the_reward_service_gets_its_own_key_never_the_upstreams(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAPO_TEST_RM_KEY", "rm-secret")
    task = bon_task(
        RewardSpec(url="http://rm.test/reward", objectives=("q",), api_key_env="IAPO_TEST_RM_KEY")
    )
    seen: list[str | None] = []
    scripted = Scripted()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host != "rm.test":
            return scripted(request)
        seen.append(request.headers.get("authorization"))
        body = json.loads(request.content)
        scores = [[candidate_reward(c)] for c in body["candidates"]]
        scores[0] = []  # a malformed row: that candidate stays unscored
        return httpx.Response(200, json={"objectives": body["objectives"], "scores": scores})

    monkeypatch.setenv("IAPO_TEST_UP_KEY", "up-secret")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sampler = HttpSampler(
            task,
            upstream(api_key_env="IAPO_TEST_UP_KEY"),
            ROWS,
            client=client,
            run_key="k",
        )
        result = await optimize(task, sampler, 40, np.random.default_rng(seed))
    assert result.spent == 40
    assert seen
    assert set(seen) == {"Bearer rm-secret"}
    assert sampler.unscored == len(seen), "one malformed row per call"
