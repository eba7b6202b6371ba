from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture
def seed() -> int:
    """The test seed: IAPO_TEST_SEED or 1234; put it in every failure message."""
    return int(os.environ.get("IAPO_TEST_SEED", "1234"))


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
