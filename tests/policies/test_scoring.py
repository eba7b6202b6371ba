"""The reward client both halves share, run over each half's transport: the proxy's
UpstreamClient and the optimizer's retrying poster must score the same way."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from optimizer._http import Poster
from policies.errors import ApiError, UpstreamError
from policies.reward import RewardSpec
from policies.scoring import RewardScorer, RewardTransport
from tests.proxy.scripted import mock_client

Handler = Callable[[httpx.Request], httpx.Response]
MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"}]


def optimizer_poster(handler: Handler) -> Poster:
    async def no_sleep(_: float) -> None:
        return None

    return Poster(
        "reward",
        "reward service",
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        headers={"content-type": "application/json"},
        timeout=httpx.Timeout(5.0),
        max_concurrency=4,
        max_retries=0,
        sleep=no_sleep,
        jitter=random.Random(0),
    )


def proxy_client(handler: Handler) -> RewardTransport:
    return mock_client(handler, name="reward", url="http://rm.test", max_concurrency=4)


@pytest.fixture(params=["proxy", "optimizer"])
def transport(request: pytest.FixtureRequest) -> Callable[[Handler], RewardTransport]:
    return proxy_client if request.param == "proxy" else optimizer_poster  # type: ignore[return-value]


def deadline() -> float:
    return asyncio.get_running_loop().time() + 5


async def test_iapo_contract_in_the_objectives_asked_with_unscored_rows_nan(
    transport: Callable[[Handler], RewardTransport],
) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        scores = [[1, 2], [3, 4], [5]]
        return httpx.Response(200, json={"objectives": ["b", "a"], "scores": scores})

    spec = RewardSpec(url="http://rm.test/r", objectives=("a", "b"), model="rm")
    matrix = await RewardScorer(spec, transport(handler)).score(
        MESSAGES, ["x", "y", "z"], deadline=deadline()
    )
    assert seen == [
        {
            "candidates": ["x", "y", "z"],
            "objectives": ["a", "b"],
            "messages": MESSAGES,
            "model": "rm",
        }
    ]
    np.testing.assert_array_equal(matrix[:2], [[2, 1], [4, 3]])
    assert np.isnan(matrix[2]).all()


async def test_vllm_pooling_one_conversation_per_candidate_as_the_assistant_turn(
    transport: Callable[[Handler], RewardTransport],
) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        reply = body["messages"][-1]["content"]
        if reply == "bad":
            return httpx.Response(400, json={"error": {"message": "too long"}})
        return httpx.Response(200, json={"data": [{"index": 0, "data": [[0.0], [len(reply)]]}]})

    spec = RewardSpec(url="http://rm.test/pooling", kind="vllm", model="rm")
    scorer = RewardScorer(spec, transport(handler))
    matrix = await scorer.score(MESSAGES, ["a", "bbb", "bad"], deadline=deadline())
    assert matrix[:2].tolist() == [[1.0], [3.0]]
    assert np.isnan(matrix[2, 0]), "its call failed: unscored, the others count"
    assert sorted(seen, key=lambda b: b["messages"][-1]["content"])[0] == {
        "model": "rm",
        "messages": [*MESSAGES, {"role": "assistant", "content": "a"}],
    }
    assert len(seen) == 3
    with pytest.raises(ApiError) as refused:  # every call failed: the error, status kept
        await scorer.score(MESSAGES, ["bad"], deadline=deadline())
    assert refused.value.status_code == 400


async def test_vllm_score_takes_the_question_and_maps_indices(
    transport: Callable[[Handler], RewardTransport],
) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        data = [{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}, {"index": 7, "score": 1}]
        return httpx.Response(200, json={"data": data})

    spec = RewardSpec(url="http://rm.test/score", kind="vllm")
    matrix = await RewardScorer(spec, transport(handler)).score(
        MESSAGES, ["a", "b", "c"], deadline=deadline()
    )
    assert seen == [{"text_1": "2+2?", "text_2": ["a", "b", "c"]}]
    assert matrix[:2].tolist() == [[0.1], [0.9]]
    assert np.isnan(matrix[2, 0])


async def test_an_unusable_reply_is_an_upstream_error(
    transport: Callable[[Handler], RewardTransport],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"objectives": ["a"], "scores": [[1.0]]})

    spec = RewardSpec(url="http://rm.test/r", objectives=("a",))
    with pytest.raises(UpstreamError, match="1 score rows for 2 candidates") as bad:
        await RewardScorer(spec, transport(handler)).score(
            MESSAGES, ["x", "y"], deadline=deadline()
        )
    assert bad.value.code == "bad_response"
