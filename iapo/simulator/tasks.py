"""The tasks a simulator answers, as task files and JSONL datasets on disk.

``write_tasks(simulator, "work/", "http://127.0.0.1:8900")`` writes, per task, a task file
(``policies.taskfile`` format, its upstream pointing at the simulator) and the train and
test datasets, so ``iapo optimize --task work/math.toml`` and ``iapo serve`` run against
the simulator exactly as against a real LLM. Completion tokens are priced so that the
upstream cost of one sample equals the table's cost of that prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import tomli_w

from iapo.simulator.engine import TOKENS_PER_COST_UNIT, Simulator
from iapo.simulator.rewards import TableRewards
from iapo.simulator.synthetic import (
    DEFAULT_SEED,
    MAJORITY_PROMPTS,
    REWARD_PROMPTS,
    REWARD_TIERS,
    synthetic_majority_table,
    synthetic_reward_table,
)
from optimizer.api import replay_task
from policies.errors import ConfigError
from policies.extract import ExtractorSpec
from policies.reward import RewardSpec
from policies.table import BestOfNTable, Split, load_table, replay_prompt_texts
from policies.tasks import PromptCandidate, TaskSpec
from policies.upstream import UpstreamSpec

__all__ = [
    "MAJORITY_TASK",
    "MODEL",
    "REWARD_TASK",
    "SimulatedTask",
    "majority_task",
    "make_simulator",
    "reward_task",
    "upstream_spec",
    "write_proxy_config",
    "write_tasks",
]

MAJORITY_TASK = "math"
REWARD_TASK = "assist"
MODEL = "iapo-sim"


def make_simulator(
    replay: str | Path | None = None,
    *,
    seed: int = DEFAULT_SEED,
    rng: np.random.Generator | None = None,
) -> Simulator:
    """The built-in synthetic simulator, or one answering from a recorded table.

    ``seed`` generates the synthetic tables and question texts; ``rng`` draws the samples
    of requests that carry no ``seed`` (default: seeded by ``seed``). A majority table
    replaces the synthetic majority task, a Best-of-N table the synthetic Best-of-N task;
    the other task stays synthetic. A replayed table's prompts are
    :func:`policies.table.replay_prompt_texts`, as ``iapo optimize --replay`` names them.
    """
    if replay is None:
        return Simulator(
            synthetic_majority_table(seed),
            synthetic_reward_table(seed),
            majority_prompts=MAJORITY_PROMPTS,
            reward_prompts=REWARD_PROMPTS,
            seed=seed,
            rng=rng,
        )
    table = load_table(replay)
    if isinstance(table, BestOfNTable):
        return Simulator(
            synthetic_majority_table(seed),
            TableRewards(table, seed),
            majority_prompts=MAJORITY_PROMPTS,
            reward_prompts=replay_prompt_texts(table),
            seed=seed,
            rng=rng,
            replayed="reward",
        )
    return Simulator(
        table,
        synthetic_reward_table(seed),
        majority_prompts=replay_prompt_texts(table),
        reward_prompts=REWARD_PROMPTS,
        seed=seed,
        rng=rng,
        replayed="majority",
    )


def upstream_spec(base_url: str) -> UpstreamSpec:
    """The simulator as an upstream; ``base_url`` without ``/v1``."""
    return UpstreamSpec(
        base_url=base_url.rstrip("/") + "/v1",
        model=MODEL,
        name="simulator",
        price_per_1k_prompt_tokens=0.0,
        price_per_1k_completion_tokens=1000.0 / TOKENS_PER_COST_UNIT,
    )


def majority_task(simulator: Simulator, name: str = MAJORITY_TASK) -> TaskSpec:
    """The majority-vote task: the table's prompts (ids "0", "1", …), boxed answers; a
    replayed table's task is exactly :func:`optimizer.replay_task`."""
    if simulator.replayed == "majority":
        return replay_task(simulator.majority, name=name)
    prompts = tuple(
        PromptCandidate(id=str(p), text=text) for p, text in enumerate(simulator.majority_prompts)
    )
    return TaskSpec(name=name, prompts=prompts, extractor=ExtractorSpec(kind="boxed"))


def reward_task(simulator: Simulator, base_url: str, name: str = REWARD_TASK) -> TaskSpec:
    """The Best-of-N task, scored by the simulator's reward endpoint: a replayed table's
    task is exactly :func:`optimizer.replay_task` (default tiers, equal objective weights)."""
    assert simulator.reward is not None
    reward_url = base_url.rstrip("/") + "/v1/reward"
    if isinstance(simulator.reward, TableRewards):
        return replay_task(simulator.reward.table, name=name, reward_url=reward_url)
    prompts = tuple(
        PromptCandidate(id=str(p), text=text) for p, text in enumerate(simulator.reward_prompts)
    )
    return TaskSpec(
        name=name,
        prompts=prompts,
        strategy="best_of_n",
        reward=RewardSpec(url=reward_url, objectives=simulator.reward.objectives),
        tiers=REWARD_TIERS,
        default_tier=REWARD_TIERS[1].name,
    )


@dataclass(frozen=True)
class SimulatedTask:
    """One written task: its spec, task file and datasets (test may be None)."""

    spec: TaskSpec
    task_file: Path
    train: Path
    test: Path | None


def _dataset_rows(simulator: Simulator, kind: str, split: Split) -> list[dict[str, Any]]:
    if kind == "majority":
        return [
            {"id": f"{split}-{q}", "question": text, "answer": simulator.gold_answer(split, q)}
            for q, text in enumerate(simulator.questions.get(split, ()))
        ]
    return [
        {"id": f"{split}-{q}", "question": text}
        for q, text in enumerate(simulator.requests.get(split, ()))
    ]


def write_tasks(
    simulator: Simulator,
    directory: str | Path,
    base_url: str,
    *,
    replay_name: str | None = None,
) -> list[SimulatedTask]:
    """Write the task files and datasets of every task the simulator answers.

    ``replay_name`` names the task of the replayed table (default: the built-in name of
    its kind, ``math`` or ``assist``); use the ``--name`` given to ``iapo optimize --replay``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    upstream = upstream_spec(base_url)
    names = {"majority": MAJORITY_TASK, "reward": REWARD_TASK}
    if simulator.replayed is not None and replay_name is not None:
        names[simulator.replayed] = replay_name
    if names["majority"] == names["reward"]:
        raise ConfigError(f"task name {replay_name!r} is the other task's; pick another")
    specs = [("majority", majority_task(simulator, names["majority"]))]
    if simulator.reward is not None:
        specs.append(("reward", reward_task(simulator, base_url, names["reward"])))
    written = []
    for kind, spec in specs:
        paths: dict[Split, Path | None] = {}
        for split in ("train", "test"):
            rows = _dataset_rows(simulator, kind, split)
            path = directory / f"{spec.name}-{split}.jsonl"
            if rows:
                path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            paths[split] = path if rows else None
        train = paths["train"]
        assert train is not None
        document = {
            "task": msgspec.to_builtins(spec),
            "upstream": msgspec.to_builtins(upstream),
            "dataset": {"path": train.name},
        }
        task_file = directory / f"{spec.name}.toml"
        task_file.write_text(_dumps(document), encoding="utf-8")
        written.append(SimulatedTask(spec, task_file, train, paths["test"]))
    return written


def write_proxy_config(
    directory: str | Path,
    base_url: str,
    tasks: list[SimulatedTask],
    *,
    port: int = 8080,
    replayed: tuple[str, str] | None = None,
) -> Path:
    """Write ``proxy.toml`` for ``iapo serve``: the simulator upstream and one task per
    written task, each served from ``policies/<task>.json`` (what ``iapo optimize --out``
    writes), with the simulator's extractor (``boxed``) or reward endpoint bound in the
    task, whatever the policy says. ``replayed`` = (table path, task name) makes the
    header suggest ``iapo optimize --replay`` for that task. It makes the README's snippet
    work as written: the majority task answers to ``model="math-solver"`` too, other
    models pass through to the simulator, and the proxy keys come from ``IAPO_API_KEYS``.
    """
    path = Path(directory) / "proxy.toml"

    def command(task: SimulatedTask) -> str:
        out = f"--budget 3000 --out policies/{task.spec.name}.json"
        if replayed is not None and replayed[1] == task.spec.name:
            return f"iapo optimize --replay {replayed[0]} --name {task.spec.name} {out}"
        return f"iapo optimize --task {task.task_file.name} {out}"

    header = (
        "# IAPO_API_KEYS=sk-your-proxy-key iapo serve --config proxy.toml, once the\n"
        "# policies exist (run from this directory), e.g.\n"
        + "".join(f"#   {command(t)}\n" for t in tasks)
    )
    entries: list[dict[str, Any]] = []
    for task in tasks:
        entry: dict[str, Any] = {
            "name": task.spec.name,
            "policy_file": f"policies/{task.spec.name}.json",
            "aliases": [f"{task.spec.name}-solver"] if task.spec.strategy == "majority" else None,
        }
        if task.spec.strategy == "best_of_n":
            entry["reward"] = msgspec.to_builtins(task.spec.reward)
        else:
            entry["extractor"] = msgspec.to_builtins(task.spec.extractor)
        entries.append(entry)
    document = {
        "passthrough": True,
        "server": {"host": "127.0.0.1", "port": port},
        "auth": {"keys_env": "IAPO_API_KEYS"},
        "upstreams": [msgspec.to_builtins(upstream_spec(base_url))],
        "tasks": entries,
    }
    path.write_text(header + _dumps(document), encoding="utf-8")
    return path


def _dumps(document: dict[str, Any]) -> str:
    """TOML of ``document``; None values (TOML has no null) are left out."""
    return tomli_w.dumps(_without_none(document))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value
