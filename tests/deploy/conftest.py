"""Fixtures of the deploy tests: parsed files and the proxy's exported series."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.deploy.promql import DASHBOARD, exported_series, promtool


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
def exported() -> dict[str, frozenset[str]]:
    return exported_series()


@pytest.fixture
def promtool_path() -> str:
    path = promtool()
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path
