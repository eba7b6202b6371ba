"""Exact early stopping on the recorded MATH answer distributions.

Each (prompt, problem) pair gets a fixed sequence of N sampled answer categories; the
scripted upstream serves them in order, so the early-stopped vote sees a prefix of the
sequence the full vote sees. Exactness: whenever the full vote has a unique winner, the
early-stopped vote picks it. Savings: the share of N actually drawn.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from policies import ExtractorSpec, StopRule, majority_vote, make_extractor
from proxy.sampling import draw_samples
from proxy.upstream import UpstreamClient
from tests.proxy.scripted import mock_client

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "MATH_final.npz"


def serving(answers: list[int]) -> UpstreamClient:
    queue = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        n = json.loads(request.content).get("n", 1)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": f"so it is {next(queue)}"}}
            for i in range(n)
        ]
        return httpx.Response(200, json={"choices": choices, "usage": {"completion_tokens": n}})

    return mock_client(handler)


@pytest.mark.parametrize("n", [8, 16])
async def test_early_stop_is_exact_and_saves_samples_on_math(seed: int, n: int) -> None:
    if not DATA.exists():
        pytest.skip(f"recorded data not found at {DATA}")
    table = np.load(DATA)
    probs = table["cat_probs"]
    rng = np.random.default_rng(seed)
    extract = make_extractor(ExtractorSpec())
    deadline = asyncio.get_running_loop().time() + 30
    drawn, decided = [], 0
    for _ in range(120):
        p, q = int(rng.integers(probs.shape[0])), int(rng.integers(probs.shape[1]))
        dist = probs[p, q] / probs[p, q].sum()
        answers = [int(c) for c in rng.choice(len(dist), size=n, p=dist)]
        full = majority_vote([str(a) for a in answers], np.random.default_rng(0))
        result = await draw_samples(
            serving(answers),
            {},
            n=n,
            supports_n=True,
            extractor=extract,
            stop=StopRule(kind="exact"),
            deadline=deadline,
        )
        stopped = majority_vote([s.answer for s in result.samples], np.random.default_rng(0))
        if len(full.tied) == 1:
            decided += 1
            assert stopped.answer == full.answer, f"seed {seed}: p={p} q={q} answers={answers}"
        drawn.append(result.launched / n)
    share = float(np.mean(drawn))
    # A wave never draws past the point where the vote is decided: a real saving, and at
    # least a majority is always drawn.
    assert 0.5 < share < 0.85, f"seed {seed}: drew {share:.2f} of N on average"
    assert decided > 60
