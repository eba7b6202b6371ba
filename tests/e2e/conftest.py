"""End-to-end fixtures: real uvicorn servers on 127.0.0.1 (free ports), in background threads.

``upstream_server(scripted)`` serves a ScriptedUpstream; ``proxy_server(config)`` serves
the proxy app in front of it and yields a :class:`ServedProxy` (its base URL, and the
live ProxyService for looking at in-flight counts, breakers, the request log).

    with upstream_server(ScriptedUpstream(["12"])) as up_url, \\
         proxy_server(make_config(tmp_path, base_url=up_url + "/v1")) as proxy:
        OpenAI(base_url=proxy.url + "/v1", api_key="k").chat.completions.create(...)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import numpy as np
import pytest

from proxy.app import create_app
from proxy.config import ProxyConfig
from proxy.server import ServerThread
from proxy.service import ProxyService

__all__ = ["ServedProxy", "proxy_server", "upstream_server", "wait_until"]

pytestmark = pytest.mark.e2e


class ServedProxy(msgspec.Struct):
    url: str
    service: ProxyService

    @property
    def v1(self) -> str:
        return self.url + "/v1"


@contextmanager
def upstream_server(app: Any) -> Iterator[str]:
    """Serve an ASGI app (e.g. a ScriptedUpstream) on 127.0.0.1; yields its base URL."""
    with ServerThread(app) as url:
        yield url


@contextmanager
def proxy_server(config: ProxyConfig, **create_app_kwargs: Any) -> Iterator[ServedProxy]:
    """Serve the proxy for ``config`` on 127.0.0.1 (lifespan included)."""
    create_app_kwargs.setdefault("rng", np.random.default_rng(0))
    create_app_kwargs.setdefault("env", {})
    app = create_app(config, **create_app_kwargs)
    with ServerThread(app) as url:
        yield ServedProxy(url, app.state.service)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until true or the timeout; returns its last value."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
