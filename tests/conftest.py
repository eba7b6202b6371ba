from __future__ import annotations

import os
from collections.abc import Iterator
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


# The transport a proxy under test reaches its upstream with (``server.upstream_transport``):
# ``lean`` (the production default) unless a module runs its tests over both, by setting
# ``BOTH_TRANSPORTS = True`` (tests/proxy: by using ``running_proxy``).
UPSTREAM_TRANSPORTS = ("lean", "httpx")
_upstream_transport = ["lean"]


def current_upstream_transport() -> str:
    """The transport the running test's proxy should use."""
    return _upstream_transport[0]


@pytest.fixture(autouse=True)
def upstream_transport(request: pytest.FixtureRequest) -> Iterator[str]:
    """``lean`` (the production default) or ``httpx`` (``server.upstream_transport``)."""
    _upstream_transport[0] = getattr(request, "param", "lean")
    try:
        yield _upstream_transport[0]
    finally:
        _upstream_transport[0] = "lean"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if getattr(metafunc.module, "BOTH_TRANSPORTS", False):
        metafunc.parametrize("upstream_transport", UPSTREAM_TRANSPORTS, indirect=True)
