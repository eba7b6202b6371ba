"""``iapo optimize --task`` for a task scored by a vLLM reward model (``/pooling``), against
a scripted OpenAI-compatible upstream and reward model served on 127.0.0.1; resumed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar import Litestar, Request, Response, post

from iapo.cli import main
from policies.policy import load_policy

from .conftest import served_in_thread

simulator = pytest.importorskip("iapo.simulator")

pytestmark = pytest.mark.e2e

PROMPTS = {"terse": "Answer in a word.", "thorough": "Answer thoroughly."}


class Served:
    """What the scripted servers were asked (appended from the server's thread)."""

    def __init__(self) -> None:
        self.samples = 0
        self.pooling: list[dict[str, Any]] = []


def scripted_app(served: Served) -> Litestar:
    """Chat completions whose length depends on the prompt and the seed, and a vLLM
    ``/pooling`` reward model that scores a reply by its length and refuses (400) the
    replies that say "refuse" (as vLLM refuses a conversation too long for the model)."""

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> dict[str, Any]:
        data = json.loads(await request.body())
        rng = np.random.default_rng(data["seed"])
        thorough = data["messages"][0]["content"] == PROMPTS["thorough"]
        choices = []
        for j in range(data["n"]):
            words = int(rng.integers(1, 4 if thorough else 3)) if rng.random() > 0.1 else 0
            text = "refuse" if words == 0 else " ".join(["word"] * words * (3 if thorough else 1))
            choices.append({"index": j, "message": {"role": "assistant", "content": text}})
        served.samples += data["n"]
        usage = {"prompt_tokens": 10, "completion_tokens": 5 * data["n"], "total_tokens": 0}
        return {"choices": choices, "usage": usage}

    @post("/pooling", status_code=200)
    async def pooling(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        data = json.loads(await request.body())
        served.pooling.append(data)
        reply = data["messages"][-1]["content"]
        if reply == "refuse":
            return Response({"error": {"message": "too long"}}, status_code=400)
        return Response({"data": [{"index": 0, "data": [[0.0], [len(reply) / 10]]}]})

    return Litestar([chat, pooling])


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    with served_in_thread(scripted_app(served)) as url:
        yield url, served


def write_task(directory: Path, url: str) -> Path:
    rows = [{"id": f"q{i}", "question": f"Describe item {i}."} for i in range(20)]
    (directory / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = "".join(
        f'[[task.prompts]]\nid = "{pid}"\ntext = "{text}"\n' for pid, text in PROMPTS.items()
    )
    task_file = directory / "items.toml"
    task_file.write_text(
        f"""[task]
name = "items"
strategy = "best_of_n"
n_max = 4
default_tier = "premium"
reward = {{ kind = "vllm", url = "{url}/pooling", model = "rm", objectives = ["quality"] }}
tiers = [{{ name = "premium", cost_weight = 0.0, objective_weights = {{ quality = 1.0 }} }}]
{prompts}
[upstream]
base_url = "{url}/v1"
model = "scripted"
supports_n = true

[dataset]
path = "items.jsonl"
"""
    )
    return task_file


def test_optimize_task_scores_with_a_vllm_reward_model_and_a_rerun_pays_nothing(
    tmp_path: Path, server: tuple[str, Served], capsys: pytest.CaptureFixture[str]
) -> None:
    url, served = server
    task_file = write_task(tmp_path, url)
    out = tmp_path / "policy.json"
    args = ["optimize", "--task", str(task_file), "--budget", "120", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "120 newly paid, 0 read from the cache" in first
    assert served.samples == len(served.pooling) == 120, "one reward call per candidate"
    refused = sum(b["messages"][-1]["content"] == "refuse" for b in served.pooling)
    assert refused > 0
    assert f"{120 - refused} samples scored, {refused} left unscored" in first
    system, user, reply = served.pooling[0]["messages"]
    assert served.pooling[0]["model"] == "rm"
    assert system == {"role": "system", "content": system["content"]}
    assert system["content"] in PROMPTS.values()
    assert user["role"] == "user"
    assert user["content"].startswith("Describe item ")
    assert reply["role"] == "assistant"

    policy = load_policy(out)
    premium = policy.tiers["premium"]
    assert premium.strategy == "best_of_n"
    assert premium.prompt.id == "thorough"  # its replies are longer: higher reward
    assert policy.reward is not None
    assert policy.reward.kind == "vllm"

    assert main(args) == 0  # the same arguments: samples and scores come from the cache
    second = capsys.readouterr().out
    assert "0 newly paid, 120 read from the cache" in second
    assert "0 samples scored, 0 left unscored" in second
    assert served.samples == len(served.pooling) == 120, "nothing asked again"
    assert load_policy(out).tiers["premium"] == premium
