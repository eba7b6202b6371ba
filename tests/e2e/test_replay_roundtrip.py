"""The replay round trip, as README documents it: a generated table, ``iapo simulate
--replay`` (real process), ``iapo optimize --replay``, ``iapo serve`` (real process) and
the openai SDK. Every served request must run the tier's chosen prompt, which the
simulator recognises (its replies name the prompt; ``/healthz`` counts unknown ones)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from iapo.cli import main
from iapo.simulator import categorical_bon_table, majority_table, save_table
from iapo.testing import free_port, wait_ready
from policies.policy import load_policy

pytestmark = pytest.mark.e2e


@contextmanager
def _process(argv: list[str], ready_url: str, log: Path, **env: str) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iapo", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        try:
            wait_ready(ready_url, proc=proc)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


PROXY_KEY = "sk-roundtrip"


@pytest.mark.parametrize("kind", ["bon", "majority"])
def test_served_requests_run_the_chosen_prompt(kind: str, tmp_path: Path) -> None:
    table_path = tmp_path / "chat.npz"
    if kind == "bon":
        save_table(categorical_bon_table(11, prompts=5, queries=40, test_queries=6), table_path)
    else:
        save_table(majority_table(11, prompts=5, queries=40, test_queries=6), table_path)
    sim_port, proxy_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    work = tmp_path / "sim"
    simulate = ["simulate", "--replay", str(table_path), "--port", str(sim_port)]
    with _process(
        [*simulate, "--write-task", str(work)], sim_url + "/healthz", tmp_path / "sim.log"
    ):
        policy_file = work / "policies" / "chat.json"
        optimize = ["optimize", "--replay", str(table_path), "--budget", "800", "--n-max", "8"]
        assert main([*optimize, "--quiet", "--out", str(policy_file)]) == 0
        policy = load_policy(policy_file)
        assert policy.task == "chat"
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        with _process(
            ["serve", "--config", str(work / "proxy.toml")],
            proxy_url + "/readyz",
            tmp_path / "serve.log",
            IAPO_PORT=str(proxy_port),
            IAPO_API_KEYS=PROXY_KEY,  # the written proxy.toml reads its keys from here
        ):
            _send(policy, proxy_url, work / "chat-test.jsonl", kind)
        health = httpx.get(sim_url + "/healthz", timeout=5).json()
    assert health["unknown_prompts"] == 0, (tmp_path / "sim.log").read_text()


def _send(policy: object, proxy_url: str, dataset: Path, kind: str) -> None:
    from policies.policy import Policy

    assert isinstance(policy, Policy)
    questions = [json.loads(line)["question"] for line in dataset.read_text().splitlines()]
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=PROXY_KEY, max_retries=0)
    served = 0
    with client:
        for tier, choice in policy.tiers.items():
            for question in questions[:3]:
                raw = client.chat.completions.with_raw_response.create(
                    model="iapo-sim",
                    messages=[{"role": "user", "content": question}],
                    extra_headers={"X-IAPO-Task": "chat", "X-IAPO-Tier": tier},
                )
                assert raw.headers["x-iapo-samples"] == f"{choice.n}/{choice.n}"
                text = raw.parse().choices[0].message.content or ""
                # the simulator's replies name the prompt it recognised
                who = "Style" if kind == "bon" else "Approach"
                assert re.match(rf"{who} {choice.prompt.id}\b", text), (tier, text)
                if kind == "bon":
                    assert "x-iapo-score" in raw.headers
                    assert "x-iapo-unranked" not in raw.headers
                served += 1
    assert served == 3 * len(policy.tiers)
