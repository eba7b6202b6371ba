"""A simulated LLM: an OpenAI-compatible upstream answering from recorded distributions.

``iapo simulate`` serves it; the demo and the tests run it in-process::

    simulator = make_simulator()                       # built-in synthetic tables
    async with serve_in_background(create_app(simulator)) as base_url:
        write_tasks(simulator, "work/", base_url)      # task files + JSONL datasets

Majority-vote tasks answer from a ``.npz`` majority table (DESIGN.md contract); the
Best-of-N task answers from a synthetic helpfulness/harmlessness table or a ``.npz``
Best-of-N table, and scores candidates through the iapo reward contract at ``/v1/reward``.
``generate`` makes synthetic tables of any shape (``iapo simulate --generate``).
"""

from __future__ import annotations

from iapo.simulator.app import UNKNOWN_PROMPT_HEADER, SimulatorStats, create_app
from iapo.simulator.engine import TOKENS_PER_COST_UNIT, Completion, Route, Sample, Simulator
from iapo.simulator.exact import (
    expected_max_standard_normal,
    majority_accuracy,
    majority_credit_exact,
)
from iapo.simulator.generate import categorical_bon_table, majority_table
from iapo.simulator.rewards import RewardSource, RewardTable, TableRewards
from iapo.simulator.server import serve_in_background
from iapo.simulator.synthetic import (
    DEFAULT_SEED,
    MAJORITY_PROMPTS,
    REWARD_OBJECTIVES,
    REWARD_PROMPTS,
    REWARD_TIERS,
    synthetic_majority_table,
    synthetic_reward_table,
)
from iapo.simulator.tasks import (
    MAJORITY_TASK,
    MODEL,
    REWARD_TASK,
    SimulatedTask,
    majority_task,
    make_simulator,
    reward_task,
    upstream_spec,
    write_proxy_config,
    write_tasks,
)
from policies.table import AnyTable, BestOfNTable, RecordedTable, Split, load_table, save_table

__all__ = [
    "DEFAULT_SEED",
    "MAJORITY_PROMPTS",
    "MAJORITY_TASK",
    "MODEL",
    "REWARD_OBJECTIVES",
    "REWARD_PROMPTS",
    "REWARD_TASK",
    "REWARD_TIERS",
    "TOKENS_PER_COST_UNIT",
    "UNKNOWN_PROMPT_HEADER",
    "AnyTable",
    "BestOfNTable",
    "Completion",
    "RecordedTable",
    "RewardSource",
    "RewardTable",
    "Route",
    "Sample",
    "SimulatedTask",
    "Simulator",
    "SimulatorStats",
    "Split",
    "TableRewards",
    "categorical_bon_table",
    "create_app",
    "expected_max_standard_normal",
    "load_table",
    "majority_accuracy",
    "majority_credit_exact",
    "majority_table",
    "majority_task",
    "make_simulator",
    "reward_task",
    "save_table",
    "serve_in_background",
    "synthetic_majority_table",
    "synthetic_reward_table",
    "upstream_spec",
    "write_proxy_config",
    "write_tasks",
]
