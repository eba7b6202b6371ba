from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from optimizer import HttpSampler, SampleCache, optimize, sample_seed
from policies.errors import SamplingError
from policies.reward import RewardSpec
from policies.taskfile import DatasetRow
from policies.tasks import PromptCandidate, TaskSpec
from policies.tiers import Tier
from policies.upstream import UpstreamSpec

QUERIES = 12
TASK = TaskSpec(
    name="arith",
    prompts=(
        PromptCandidate("spread", "Answer with a number."),
        PromptCandidate("stubborn", "Answer fast with a number."),
    ),
    n_max=8,
    tiers=(Tier("premium", cost_weight=0.0), Tier("economy", cost_weight=5.0)),
    default_tier="premium",
)
ROWS = [
    DatasetRow(question=f"What is {i} + {i}?", answer=str(2 * i), id=f"q{i}")
    for i in range(QUERIES)
]


def upstream(**changes: object) -> UpstreamSpec:
    spec = {
        "base_url": "http://upstream.test/v1",
        "model": "scripted",
        "supports_n": False,
        "max_concurrency": 4,
        "price_per_1k_prompt_tokens": 1.0,
        "price_per_1k_completion_tokens": 2.0,
    }
    spec.update(changes)
    return UpstreamSpec(**spec)  # type: ignore[arg-type]


class Scripted:
    """An OpenAI-compatible upstream whose answers depend only on (prompt, question, seed).

    "spread": right 55% of the time, wrong answers spread over 9 values (wins at large N);
    "stubborn": right 70% on half the questions, on the others one wrong answer 60%.
    """

    def __init__(self, fail_after: int | None = None) -> None:
        self.served = 0
        self.seeds: list[int] = []
        self.fail_after = fail_after

    def answer(self, system: str, question: str, seed: int) -> str:
        i = int(question.split()[2])
        rng = np.random.default_rng(seed)
        u = rng.random()
        if system.startswith("Answer with"):
            return str(2 * i) if u < 0.55 else str(1000 + rng.integers(9))
        if i % 2 == 0:
            return str(2 * i) if u < 0.7 else str(1000 + rng.integers(9))
        return str(2 * i) if u < 0.4 else "7"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if self.fail_after is not None and self.served >= self.fail_after:
            raise RuntimeError("interrupted")
        system, question = body["messages"][0]["content"], body["messages"][-1]["content"]
        self.seeds.append(body["seed"])
        choices = []
        for j in range(body["n"]):
            text = f"Let me think. The answer is {self.answer(system, question, body['seed'] + j)}."
            choices.append({"index": j, "message": {"role": "assistant", "content": text}})
        self.served += body["n"]
        usage = {"prompt_tokens": 20, "completion_tokens": 10 * body["n"], "total_tokens": 0}
        return httpx.Response(200, json={"choices": choices, "usage": usage})


async def run_live(
    handler, budget: int, seed: int, cache: SampleCache | None, spec=None, task=TASK
):
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sampler = HttpSampler(
            task,
            spec or upstream(),
            ROWS,
            client=client,
            run_key="k1",
            cache=cache,
            sleep=_no_sleep,
        )
        result = await optimize(task, sampler, budget, np.random.default_rng(seed))
    return result, sampler


async def _no_sleep(_: float) -> None:
    return None


async def test_live_run_end_to_end(seed: int) -> None:
    handler = Scripted()
    result, sampler = await run_live(handler, 600, seed, None)
    assert handler.served == sampler.paid == result.spent == 600
    assert len(set(handler.seeds)) == len(handler.seeds), "every sample gets its own seed"
    assert sampler.prompt_tokens == 600 * 20
    assert sampler.completion_tokens == 600 * 10
    assert sampler.cost == pytest.approx(600 * (20 * 1.0 + 10 * 2.0) / 1000)
    premium = result.policy.tiers["premium"]
    assert premium.prompt.id == "spread", f"seed {seed}"
    assert premium.n >= 4, f"seed {seed}"
    assert result.policy.tiers["economy"].n < premium.n  # 0.2 utility per extra sample


async def test_upstream_n_is_used_when_supported(seed: int) -> None:
    handler = Scripted()
    result, _ = await run_live(handler, 300, seed, None, spec=upstream(supports_n=True))
    assert handler.served == result.spent == 300
    assert len(handler.seeds) < 300  # several samples per call


async def test_interrupted_run_resumes_without_paying_twice(tmp_path: Path, seed: int) -> None:
    budget = 500
    async with await SampleCache.open(tmp_path / "samples.sqlite") as cache:
        first = Scripted(fail_after=230)
        with pytest.raises(RuntimeError, match="interrupted"):
            await run_live(first, budget, seed, cache)
        stored = await cache.count("k1")
        assert 0 < stored <= 230
        second = Scripted()
        resumed, sampler = await run_live(second, budget, seed, cache)
        assert sampler.cached == stored, "every stored sample is read back"
        assert sampler.paid == second.served == budget - stored, "nothing is paid twice"
        assert await cache.count("k1") == budget
    async with await SampleCache.open(tmp_path / "fresh.sqlite") as fresh:
        straight, _ = await run_live(Scripted(), budget, seed, fresh)
    assert {k: (t.prompt.id, t.n) for k, t in resumed.policy.tiers.items()} == {
        k: (t.prompt.id, t.n) for k, t in straight.policy.tiers.items()
    }


async def test_rate_limits_and_server_errors_are_retried(seed: int) -> None:
    inner = Scripted()
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            return httpx.Response(429, headers={"retry-after": "1"}, json={"error": {}})
        if calls["n"] % 3 == 2:
            return httpx.Response(503, json={"error": {}})
        return inner(request)

    result, _ = await run_live(flaky, 40, seed, None, spec=upstream(max_retries=3))
    assert inner.served == result.spent == 40


async def test_errors_after_retries_become_sampling_errors(seed: int) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SamplingError, match="gave up after 3 attempt"):
        await run_live(down, 40, seed, None)

    def bad_key(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    with pytest.raises(SamplingError, match="after 1 attempt"):  # 401 is not retried
        await run_live(bad_key, 40, seed, None)


async def test_best_of_n_scores_candidates_with_the_reward_service(seed: int) -> None:
    task = TaskSpec(
        name="bon",
        prompts=TASK.prompts,
        strategy="best_of_n",
        reward=RewardSpec(url="http://reward.test/score", objectives=("quality", "brevity")),
        n_max=4,
        tiers=(Tier("premium", objective_weights={"quality": 1.0, "brevity": 0.0}),),
        default_tier="premium",
    )
    scripted = Scripted()
    scored = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reward.test":
            body = json.loads(request.content)
            scored["n"] += len(body["candidates"])
            scores = [[float(len(c)), 0.0] for c in body["candidates"]]
            return httpx.Response(200, json={"objectives": body["objectives"], "scores": scores})
        return scripted(request)

    result, _ = await run_live(handler, 120, seed, None, task=task)
    assert scored["n"] == scripted.served == result.spent == 120
    premium = result.policy.tiers["premium"]
    assert premium.strategy == "best_of_n"
    # Longer answers score higher; "spread" gives 4-digit wrong answers 45% of the time,
    # so its best-of-N maximum grows with N.
    assert premium.prompt.id == "spread", f"seed {seed}"
    assert premium.n >= 3, f"seed {seed}"
    assert result.policy.reward is not None


def test_sample_seed_is_stable_and_distinct() -> None:
    assert sample_seed("k", "p", "q", 0) == sample_seed("k", "p", "q", 0)
    assert len({sample_seed("k", "p", "q", d) for d in range(1000)}) == 1000
