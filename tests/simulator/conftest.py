from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from iapo.simulator import (
    Simulator,
    SimulatorStats,
    create_app,
    make_simulator,
    serve_in_background,
)


@pytest.fixture(scope="session")
def simulator() -> Simulator:
    """The built-in synthetic simulator (its tables are generated from the default seed)."""
    return make_simulator()


@pytest.fixture
def stats() -> SimulatorStats:
    return SimulatorStats()


@pytest.fixture
async def base_url(simulator: Simulator, stats: SimulatorStats) -> AsyncIterator[str]:
    """The simulator served on a free loopback port."""
    async with serve_in_background(create_app(simulator, stats=stats)) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The real openai SDK pointed at the simulator."""
    async with openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="sim", max_retries=0) as sdk:
        yield sdk
