"""A live run samples with its upstream's temperature and top_p: the settings the policy
records as part of the arms it evaluated (``policies.SamplingSettings``)."""

from __future__ import annotations

import json

import httpx

from policies import SamplingSettings
from tests.optimizer.test_live import Scripted, run_live, upstream


async def test_live_samples_use_the_upstreams_temperature_and_top_p() -> None:
    seen: list[tuple[float, float | None]] = []
    scripted = Scripted()

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((body["temperature"], body.get("top_p")))
        return scripted(request)

    spec = upstream(temperature=0.9, top_p=0.95)
    await run_live(handler, 60, 0, None, spec=spec)
    assert set(seen) == {(0.9, 0.95)}
    assert SamplingSettings.of(spec) == SamplingSettings(temperature=0.9, top_p=0.95)
    seen.clear()
    await run_live(handler, 60, 0, None, spec=upstream())
    assert set(seen) == {(0.7, None)}  # no top_p sent unless set
