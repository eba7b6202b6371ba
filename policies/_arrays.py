"""Validation shared by the two kinds of recorded table (``policies.table``)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from policies.errors import ConfigError

__all__ = ["Split", "check_cost", "check_probabilities", "query_index"]

Split = Literal["train", "test"]

# Tolerance on Σ probabilities = 1; recorded tables are rounded to 1/128.
_SUM_TOLERANCE = 1e-6


def query_index(queries: npt.NDArray[np.int64], count: int) -> npt.NDArray[np.int64]:
    index = np.asarray(queries)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise ConfigError(f"queries must be a 1-d array of query indices, got {index!r}")
    index = index.astype(np.int64)
    if index.size == 0:
        raise ConfigError("take() needs at least one query")
    if np.any(index < 0) or np.any(index >= count):
        raise ConfigError(f"query indices must be in [0, {count})")
    return index


def check_cost(cost: npt.NDArray[np.float64], prompts: int) -> None:
    if cost.shape != (prompts,):
        raise ConfigError(f"cost_per_prompt has shape {cost.shape}, expected ({prompts},)")
    if not np.all(np.isfinite(cost)) or np.any(cost < 0):
        raise ConfigError("cost_per_prompt must be finite and ≥ 0")


def check_probabilities(probs: npt.NDArray[np.float64], key: str) -> None:
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ConfigError(f"{key} must be finite probabilities ≥ 0")
    sums = probs.sum(axis=-1)
    if np.any(np.abs(sums - 1.0) > _SUM_TOLERANCE):
        worst = np.unravel_index(int(np.argmax(np.abs(sums - 1.0))), sums.shape)
        raise ConfigError(f"{key}[{worst[0]}, {worst[1]}] sums to {sums[worst]:.6f}, expected 1")
