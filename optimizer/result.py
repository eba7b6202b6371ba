"""What a run produces: per-tier choices with intervals, baselines' picks, the policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from optimizer.estimators import Estimate
from optimizer.plan import Plan
from optimizer.sequential import ThresholdChoice, choose_threshold
from policies.policy import BudgetSpent, Policy, TierPolicy, library_versions, now_utc
from policies.tasks import TaskSpec

__all__ = [
    "ArmEstimate",
    "Estimates",
    "OptimizationResult",
    "TierReport",
    "estimates_path",
    "load_estimates",
    "save_estimates",
]

Z95 = 1.959963984540054


class ArmEstimate(msgspec.Struct, frozen=True):
    """One arm's estimate: utility with a 95% normal interval, quality, and the samples
    one request is expected to draw under the tier's stopping rule with their cost."""

    prompt: int
    n: int
    utility: float
    interval: tuple[float, float]
    quality: float
    cost: float
    observations: int
    samples: float = 0.0


class TierReport(msgspec.Struct, frozen=True):
    """A tier's choice and what prompt-only and disjoint selection would have chosen
    from the same samples (prompt-only: best N=1 prompt at N=1; disjoint: that prompt
    at its best N). ``threshold``: a ``stop = "threshold"`` tier's rule against fixed N
    (``chosen`` is the fixed-N arm it was derived from)."""

    tier: str
    cost_weight: float
    chosen: ArmEstimate
    prompt_only: ArmEstimate | None
    disjoint: ArmEstimate | None
    threshold: ThresholdChoice | None = None


class Estimates(msgspec.Struct, frozen=True):
    """Sidecar of a policy: estimated utility of every (prompt, N), per tier.

    ``utility[tier][prompt_id]`` lists N = 1..n_max (None: no estimate); ``halfwidth``
    the half-width of each one's 95% interval, in the same shape (empty in sidecars
    written before it existed); ``prompts`` the text of each prompt id, for labels.
    """

    task: str
    method: str
    n_max: int
    utility: dict[str, dict[str, list[float | None]]]
    chosen: dict[str, tuple[str, int]]
    halfwidth: dict[str, dict[str, list[float | None]]] = msgspec.field(default_factory=dict)
    prompts: dict[str, str] = msgspec.field(default_factory=dict)


class OptimizationResult(msgspec.Struct, frozen=True):
    """A finished run: the ``policy`` to serve, ``spent`` samples (``cached`` of them
    re-read from the sample cache), the ``plan``, per-tier reports and the estimates."""

    policy: Policy
    plan: Plan
    spent: int
    cached: int
    tiers: dict[str, TierReport]
    estimates: Estimates


def _arm(est: Estimate, t: int, p: int, n: int) -> ArmEstimate:
    u = float(est.utility[t, p, n - 1])
    se = float(est.stderr[t, p, n - 1])
    se = se if np.isfinite(se) else 0.0
    samples = float(est.samples[t, p, n - 1])
    cost = float(np.nan_to_num(est.cost_per_sample[p])) * samples
    return ArmEstimate(
        prompt=p,
        n=n,
        utility=u,
        interval=(u - Z95 * se, u + Z95 * se),
        quality=float(est.quality[t, p, n - 1]),
        cost=cost,
        observations=int(est.observations[p, n - 1]),
        samples=samples,
    )


def build_result(
    task: TaskSpec,
    est: Estimate,
    picks: list[tuple[int, int]],
    plan: Plan,
    *,
    spent: int,
    cached: int,
    method: str,
    seed: int | None,
    source: str | None,
    query_scores: Callable[[int, int], list[npt.NDArray[np.float64]]] | None = None,
) -> OptimizationResult:
    """Assemble the policy, tier reports and estimates of a finished run.

    ``query_scores(tier, prompt)``: that prompt's weighted rewards per sampled query,
    from which a ``stop = "threshold"`` tier's threshold is chosen
    (:func:`optimizer.sequential.choose_threshold`); without it such a tier never stops
    early.
    """
    reports: dict[str, TierReport] = {}
    tier_policies: dict[str, TierPolicy] = {}
    utility_table: dict[str, dict[str, list[float | None]]] = {}
    halfwidth_table: dict[str, dict[str, list[float | None]]] = {}
    for t, (tier, (p, n)) in enumerate(zip(task.tiers, picks, strict=True)):
        chosen = _arm(est, t, p, n)
        if not np.isfinite(chosen.utility):
            chosen = ArmEstimate(p, n, 0.0, (0.0, 0.0), 0.0, chosen.cost, 0, chosen.samples)
        at_one = np.where(np.isnan(est.utility[t, :, 0]), -np.inf, est.utility[t, :, 0])
        prompt_only = disjoint = None
        if np.isfinite(at_one).any():
            best = int(np.argmax(at_one))
            prompt_only = _arm(est, t, best, 1)
            row = est.utility[t, best, : tier.cap_n(task.n_max)]
            row = np.where(np.isnan(row), -np.inf, row)
            disjoint = _arm(est, t, best, int(np.argmax(row)) + 1)
        rule = None
        served: dict[str, Any] = {
            "n": n,
            "expected_utility": chosen.utility,
            "interval": chosen.interval,
            "expected_quality": chosen.quality if np.isfinite(chosen.quality) else None,
            "expected_cost": chosen.cost,
            "expected_samples": (
                round(min(chosen.samples, float(n)), 4) if np.isfinite(chosen.samples) else None
            ),
        }
        if tier.stop == "threshold":
            per_sample = float(np.nan_to_num(est.cost_per_sample[p]))
            rule = choose_threshold(
                query_scores(t, p) if query_scores is not None else [],
                tier.cost_weight,
                per_sample,
                n,
                tier.cap_n(task.n_max, per_sample),
            )
            served.update(_threshold_fields(chosen, rule, per_sample))
        reports[tier.name] = TierReport(
            tier.name, tier.cost_weight, chosen, prompt_only, disjoint, rule
        )
        tier_policies[tier.name] = TierPolicy(
            prompt=task.prompts[p],
            strategy=task.strategy,
            cost_weight=tier.cost_weight,
            objective_weights=tier.objective_weights,
            max_n=tier.max_n,
            max_cost=tier.max_cost,
            stop=tier.stop,
            delta=tier.delta,
            observations=chosen.observations,
            **served,
        )
        utility_table[tier.name] = {
            prompt.id: [None if np.isnan(x) else round(float(x), 6) for x in est.utility[t, i]]
            for i, prompt in enumerate(task.prompts)
        }
        halfwidth_table[tier.name] = {
            prompt.id: [
                None if not np.isfinite(se) else round(Z95 * float(se), 6)
                for se in est.stderr[t, i]
            ]
            for i, prompt in enumerate(task.prompts)
        }
    policy = Policy(
        task=task.name,
        created_at=now_utc(),
        budget=BudgetSpent(planned=plan.budget, spent=spent),
        tiers=tier_policies,
        default_tier=task.default_tier if task.default_tier in tier_policies else None,
        extractor=task.extractor if task.strategy == "majority" else None,
        reward=task.reward,
        method=method,
        seed=seed,
        source=source,
        generator=library_versions(),
    )
    estimates = Estimates(
        task=task.name,
        method=method,
        n_max=task.n_max,
        utility=utility_table,
        chosen={name: (tp.prompt.id, tp.n) for name, tp in tier_policies.items()},
        halfwidth=halfwidth_table,
        prompts={prompt.id: prompt.text for prompt in task.prompts},
    )
    return OptimizationResult(policy, plan, spent, cached, reports, estimates)


def _threshold_fields(
    chosen: ArmEstimate, rule: ThresholdChoice, per_sample: float
) -> dict[str, Any]:
    """A threshold tier's policy fields: the estimator's fixed-N figures moved by what
    the rule adds on the same reward distributions (the bias of valuing both on a
    query's few samples largely cancels in the difference)."""
    gain = rule.utility - rule.fixed_utility
    lo, hi = chosen.interval
    spread = Z95 * rule.difference_stderr
    quality = chosen.quality + rule.quality - rule.fixed_quality
    return {
        "n": rule.n,
        "threshold": rule.threshold,
        "expected_samples": rule.expected_samples,
        "expected_utility": chosen.utility + gain,
        "interval": (lo + gain - spread, hi + gain + spread),
        "expected_quality": quality if np.isfinite(quality) else None,
        "expected_cost": per_sample * rule.expected_samples,
    }


def estimates_path(policy_path: str | Path) -> Path:
    """Where the estimates of ``POLICY.json`` live: ``POLICY.estimates.json``."""
    path = Path(policy_path)
    return path.with_name(path.stem + ".estimates.json")


def save_estimates(estimates: Estimates, policy_path: str | Path) -> Path:
    target = estimates_path(policy_path)
    target.write_bytes(msgspec.json.encode(estimates))
    return target


def load_estimates(policy_path: str | Path) -> Estimates:
    """Read the estimates sidecar of a policy file."""
    return msgspec.json.decode(estimates_path(policy_path).read_bytes(), type=Estimates)
