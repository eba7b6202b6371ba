"""The simulator over HTTP, through the real openai SDK."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from iapo.simulator import (
    MAJORITY_PROMPTS,
    REWARD_PROMPTS,
    Simulator,
    SimulatorStats,
    upstream_spec,
)
from policies.extract import ExtractorSpec, make_extractor
from policies.reward import RewardResponse

boxed = make_extractor(ExtractorSpec(kind="boxed"))

# chi-square critical values at α = 0.001 for df = 1..4
CHI2_CRITICAL = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}


def _messages(simulator: Simulator, prompt: int, question: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": MAJORITY_PROMPTS[prompt]},
        {"role": "user", "content": simulator.questions["train"][question]},
    ]


async def _category_counts(
    client: openai.AsyncOpenAI, simulator: Simulator, prompt: int, question: int, *, seed: int
) -> np.ndarray:
    values = [str(v) for v in simulator.values["train"][question]]
    counts = np.zeros(len(values))
    for call in range(3):
        reply = await client.chat.completions.create(
            model="iapo-sim",
            messages=_messages(simulator, prompt, question),  # type: ignore[arg-type]
            n=1000,
            seed=seed + call,
        )
        for choice in reply.choices:
            counts[values.index(boxed(choice.message.content or ""))] += 1
    return counts


def _g_statistic(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """G-test of counts against probs; categories of probability 0 must be empty."""
    live = probs > 0
    assert counts[~live].sum() == 0
    expected = counts.sum() * probs[live]
    observed = counts[live]
    seen = observed > 0
    g = 2.0 * float(np.sum(observed[seen] * np.log(observed[seen] / expected[seen])))
    return g, int(live.sum()) - 1


@pytest.mark.parametrize(("prompt", "question"), [(1, 0), (2, 5), (3, 17), (5, 40)])
async def test_answer_frequencies_match_the_table(
    client: openai.AsyncOpenAI, simulator: Simulator, prompt: int, question: int, seed: int
) -> None:
    counts = await _category_counts(client, simulator, prompt, question, seed=seed)
    probs = simulator.majority.probs("train", prompt, question)
    g, df = _g_statistic(counts, probs)
    assert g < CHI2_CRITICAL[df], f"seed {seed}: G={g:.1f} counts={counts} probs={probs}"
    # the test has power: another prompt's distribution for the same question is rejected
    others = [simulator.majority.probs("train", p, question) for p in range(6) if p != prompt]
    other = max(others, key=lambda o: float(np.abs(o - probs).max()))
    mixed = 0.5 * probs + 0.5 * other  # half-way to the most different prompt
    assert np.abs(mixed - probs).max() > 0.05
    g_other, df_other = _g_statistic(counts, mixed)
    assert g_other > CHI2_CRITICAL[df_other], f"seed {seed}"


async def test_n_choices_and_usage_price_to_the_table_cost(
    client: openai.AsyncOpenAI, simulator: Simulator, base_url: str, stats: SimulatorStats
) -> None:
    reply = await client.chat.completions.create(
        model="iapo-sim",
        messages=_messages(simulator, 3, 2),
        n=5,  # type: ignore[arg-type]
    )
    assert [c.index for c in reply.choices] == [0, 1, 2, 3, 4]
    assert all(c.finish_reason == "stop" for c in reply.choices)
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    cost = upstream_spec(base_url).cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert cost == pytest.approx(5 * simulator.majority.cost_per_prompt[3], rel=1e-9)
    assert (stats.chat_requests, stats.samples) == (1, 5)


async def test_streaming_chunks_are_openai_shaped(
    client: openai.AsyncOpenAI, simulator: Simulator
) -> None:
    stream = await client.chat.completions.create(
        model="iapo-sim",
        messages=_messages(simulator, 2, 3),  # type: ignore[arg-type]
        n=3,
        seed=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = ["", "", ""]
    finished = set()
    usage = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if not chunk.choices:
            usage = chunk.usage
            continue
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                finished.add(choice.index)
    assert finished == {0, 1, 2}
    assert usage is not None
    assert usage.completion_tokens == 3 * 1600
    whole = await client.chat.completions.create(
        model="iapo-sim",
        messages=_messages(simulator, 2, 3),
        n=3,
        seed=9,  # type: ignore[arg-type]
    )
    assert texts == [c.message.content for c in whole.choices]


async def test_stream_without_usage_ends_with_done(base_url: str, simulator: Simulator) -> None:
    body = {"model": "m", "messages": _messages(simulator, 0, 0), "stream": True}
    async with httpx.AsyncClient() as http:
        response = await http.post(base_url + "/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in event for event in events)


async def test_bad_requests_get_openai_errors(client: openai.AsyncOpenAI, base_url: str) -> None:
    with pytest.raises(openai.BadRequestError, match="n must be between"):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], n=0
        )
    async with httpx.AsyncClient() as http:
        response = await http.post(base_url + "/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_reward_endpoint_speaks_the_contract(
    client: openai.AsyncOpenAI, simulator: Simulator, base_url: str
) -> None:
    messages = [
        {"role": "system", "content": REWARD_PROMPTS[1]},
        {"role": "user", "content": simulator.requests["train"][0]},
    ]
    reply = await client.chat.completions.create(model="m", messages=messages, n=4)  # type: ignore[arg-type]
    candidates = [c.message.content or "" for c in reply.choices]
    body = {"messages": messages, "candidates": candidates, "objectives": ["harmlessness"]}
    async with httpx.AsyncClient() as http:
        first = await http.post(base_url + "/v1/reward", json=body)
        again = await http.post(base_url + "/v1/reward", json=body)
        unknown = await http.post(base_url + "/v1/reward", json={**body, "objectives": ["x"]})
    answer = RewardResponse(**first.json())
    assert answer.objectives == ["harmlessness"]
    assert len(answer.scores) == 4
    assert all(len(row) == 1 for row in answer.scores)
    assert first.json() == again.json()
    expected = simulator.score(candidates, ["harmlessness"])
    assert answer.scores == expected
    assert unknown.status_code == 400
    assert "helpfulness" in unknown.json()["error"]["message"]


async def test_models_and_health(client: openai.AsyncOpenAI, base_url: str) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["iapo-sim"]
    async with httpx.AsyncClient() as http:
        assert (await http.get(base_url + "/healthz")).json() == {
            "status": "ok",
            "unknown_prompts": 0,
        }
