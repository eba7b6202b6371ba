from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own HOME and XDG cache directory (returned), and no ``IAPO_CACHE_DIR``:
    nothing a test runs can write to the real home, and library code is tested as it
    runs when not asked to cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("IAPO_CACHE_DIR", raising=False)
    return home / ".cache"


@pytest.fixture
def seed() -> int:
    """The test seed: IAPO_TEST_SEED or 1234; put it in every failure message."""
    return int(os.environ.get("IAPO_TEST_SEED", "1234"))


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
