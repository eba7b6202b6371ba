"""``iapo demo``: the whole loop on one machine, with no setup, no network, no data files.

Start the simulated upstream, optimise each task live against it (PSST over HTTP, with
the sample cache), store the policies, serve them through the proxy, send held-out
questions per tier through the ``openai`` SDK, and compare each tier's IAPO choice with
the prompt-only choice at N=1 on the same requests.

    report = await run_demo(DemoOptions(workdir="iapo-demo", budget=3000, requests=300))
"""

from __future__ import annotations

from iapo.demo.optimizing import BASELINE_SUFFIX, OptimizedTask, prompt_only_policy
from iapo.demo.oracle import ExactUtility, exact_utility
from iapo.demo.pipeline import (
    DemoOptions,
    DemoReport,
    NullReporter,
    Reporter,
    TaskSummary,
    TierRow,
    run_demo,
)
from iapo.demo.traffic import TierStats

__all__ = [
    "BASELINE_SUFFIX",
    "DemoOptions",
    "DemoReport",
    "ExactUtility",
    "NullReporter",
    "OptimizedTask",
    "Reporter",
    "TaskSummary",
    "TierRow",
    "TierStats",
    "exact_utility",
    "prompt_only_policy",
    "run_demo",
]
