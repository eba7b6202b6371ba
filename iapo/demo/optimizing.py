"""The demo's optimisation step: PSST live over HTTP against the simulated upstream.

Each task is optimised through the optimizer's own :class:`~optimizer.HttpSampler` with
its SQLite sample cache, exactly as ``iapo optimize --task`` would; the result gives the
IAPO policy and, from the same samples, the prompt-only pick (best prompt at N=1,
deployed at N=1) that the demo serves next to it for comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import numpy as np

from iapo.simulator import SimulatedTask
from optimizer import HttpSampler, OptimizationResult, SampleCache, optimize, save_estimates
from optimizer.svg import render_report
from policies.errors import SamplingError
from policies.policy import Policy, SamplingSettings, TierPolicy, save_policy
from policies.taskfile import DatasetRow, load_dataset, load_task_file
from policies.tasks import TaskSpec

__all__ = ["BASELINE_SUFFIX", "OptimizedTask", "optimize_task", "prompt_only_policy"]

logger = logging.getLogger(__name__)

BASELINE_SUFFIX = "-prompt-only"


@dataclass(frozen=True)
class OptimizedTask:
    """One task after optimisation: what to serve, what to compare it with, where it went."""

    spec: TaskSpec
    result: OptimizationResult
    baseline: Policy
    policy_file: Path
    report_file: Path
    test_rows: list[DatasetRow]


def prompt_only_policy(spec: TaskSpec, result: OptimizationResult) -> Policy:
    """Every tier served by its prompt-only pick at N=1, as task ``<name>-prompt-only``."""
    tiers: dict[str, TierPolicy] = {}
    for name, report in result.tiers.items():
        chosen = result.policy.tiers[name]
        arm = report.prompt_only
        if arm is None:  # no N=1 estimate at all: fall back to the chosen prompt at N=1
            prompt, utility, interval = chosen.prompt, chosen.expected_utility, chosen.interval
        else:
            prompt, utility, interval = spec.prompts[arm.prompt], arm.utility, arm.interval
        tiers[name] = msgspec.structs.replace(
            chosen,
            prompt=prompt,
            n=1,
            expected_utility=utility,
            interval=interval,
            expected_quality=None if arm is None else arm.quality,
            expected_cost=None if arm is None else arm.cost,
            observations=0 if arm is None else arm.observations,
            expected_samples=1.0,
        )
    return msgspec.structs.replace(
        result.policy, task=spec.name + BASELINE_SUFFIX, tiers=tiers, method="prompt-only@N=1"
    )


async def optimize_task(
    simulated: SimulatedTask,
    *,
    workdir: Path,
    budget: int,
    seed: int,
    method: str,
    cache: SampleCache,
    client: httpx.AsyncClient,
    progress: Callable[[int], None] | None = None,
) -> OptimizedTask:
    """Optimise one written task live; write its policy, estimates and report picture."""
    task_file, dataset = load_task_file(simulated.task_file)
    spec = task_file.task
    extractor = spec.extractor if spec.strategy == "majority" else None
    rows = load_dataset(dataset, extractor)
    # The demo starts from an empty sample cache, so the key only has to separate its tasks.
    run_key = f"demo:{spec.name}:{seed}:{method}"
    sampler = HttpSampler(
        spec, task_file.upstream, rows, client=client, run_key=run_key, cache=cache
    )
    rng = np.random.default_rng([seed, len(spec.name)])
    try:
        result = await optimize(
            spec,
            sampler,
            budget,
            rng,
            method=method,
            progress=progress,
            seed=seed,
            source=f"iapo demo: {simulated.task_file.name}",
        )
    except SamplingError:
        logger.error("optimising %s failed after %d samples", spec.name, sampler.paid)
        raise
    policy_file = workdir / "policies" / f"{spec.name}.json"
    # The sampling settings every sample was drawn with are part of the arms evaluated.
    sampling = SamplingSettings.of(task_file.upstream)
    result = msgspec.structs.replace(
        result, policy=msgspec.structs.replace(result.policy, sampling=sampling)
    )
    save_policy(result.policy, policy_file)
    save_estimates(result.estimates, policy_file)
    baseline = prompt_only_policy(spec, result)
    save_policy(baseline, workdir / "policies" / f"{baseline.task}.json")
    report_file = workdir / f"report-{spec.name}.svg"
    report_file.write_text(render_report(result.estimates), encoding="utf-8")
    test_rows = load_dataset(simulated.test, extractor) if simulated.test is not None else rows
    return OptimizedTask(
        spec=spec,
        result=result,
        baseline=baseline,
        policy_file=policy_file,
        report_file=report_file,
        test_rows=test_rows,
    )
