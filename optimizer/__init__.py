"""The offline optimizer: which prompt and how many samples each tier gets.

PSST (successive halving over (prompt, N) arms per budget tier, with sample reuse
across N and tiers) and its variants and baselines, behind one async sampler
protocol with a replay and a live implementation.

    table = load_table("MATH_final.npz")
    rng = np.random.default_rng(0)
    task = replay_task(table)
    result = await optimize(task, ReplaySampler(table, rng), 1000, rng)
    result.policy.tiers["standard"].n
"""

from __future__ import annotations

from optimizer.api import REPLAY_REWARD_URL, make_run, optimize, replay_task
from optimizer.cache import CachedSample, SampleCache
from optimizer.engine import Run
from optimizer.estimators import (
    BlockEstimator,
    Blocks,
    Estimate,
    EstimatorConfig,
    Pooled,
    Pull,
    RewardEstimator,
    VoteEstimator,
)
from optimizer.exact import best_of_n_exact, majority_credit_exact
from optimizer.live import HttpSampler, sample_seed
from optimizer.methods import DEFAULT_METHOD, METHODS, Method
from optimizer.plan import Plan
from optimizer.replay import ReplaySampler
from optimizer.result import (
    ArmEstimate,
    Estimates,
    OptimizationResult,
    TierReport,
    estimates_path,
    load_estimates,
    save_estimates,
)
from optimizer.sampling import SampleBatch, Sampler
from policies.table import AnyTable, BestOfNTable, RecordedTable, load_table

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "REPLAY_REWARD_URL",
    "AnyTable",
    "ArmEstimate",
    "BestOfNTable",
    "BlockEstimator",
    "Blocks",
    "CachedSample",
    "Estimate",
    "Estimates",
    "EstimatorConfig",
    "HttpSampler",
    "Method",
    "OptimizationResult",
    "Plan",
    "Pooled",
    "Pull",
    "RecordedTable",
    "ReplaySampler",
    "RewardEstimator",
    "Run",
    "SampleBatch",
    "SampleCache",
    "Sampler",
    "TierReport",
    "VoteEstimator",
    "best_of_n_exact",
    "estimates_path",
    "load_estimates",
    "load_table",
    "majority_credit_exact",
    "make_run",
    "optimize",
    "replay_task",
    "sample_seed",
    "save_estimates",
]
