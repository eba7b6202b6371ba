"""The litestar application: routes, lifespan, error shape.

    app = create_app(load_config("iapo.toml"))
    uvicorn.run(app)                     # or proxy.server.serve(config)

``create_app`` builds a :class:`ProxyService` whose lifespan opens one httpx client
per upstream, the policy store and the request log, and closes them (after draining
and flushing) on shutdown. Tests pass ``transports`` to script upstreams in-process.
The API key is checked by one guard for every route; a route opts out with
``opt={"open": True}`` (``/metrics`` with ``open_metrics``, the probes with ``open_health``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from policies import AuthenticationFailed, PolicyStore
from proxy.chat import ClientGone, client_gone_response, count_rejected, handle_chat
from proxy.config import ProxyConfig
from proxy.errors import error_handlers
from proxy.metrics import CONTENT_TYPE, ProxyMetrics
from proxy.service import ProxyService

__all__ = ["create_app"]

_encode = msgspec.json.encode


def _json(payload: object, status: int = 200) -> Response[bytes]:
    return Response(_encode(payload), status_code=status, media_type="application/json")


def create_app(
    config: ProxyConfig,
    *,
    metrics: ProxyMetrics | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    store: PolicyStore | None = None,
    rng: np.random.Generator | None = None,
    env: Mapping[str, str] | None = None,
) -> Litestar:
    """The proxy app for ``config``; ``app.state.service`` is its :class:`ProxyService`."""
    service = ProxyService(
        config, metrics=metrics, transports=transports, store=store, rng=rng, env=env
    )
    auth = config.auth

    def require_key(
        connection: ASGIConnection[Any, Any, Any, Any], route: BaseRouteHandler
    ) -> None:
        """The one API-key check; a refused chat request is counted like any refusal."""
        if route.opt.get("open"):
            return
        headers = connection.headers
        try:
            service.keys.check(headers.get("authorization"))
        except AuthenticationFailed as exc:
            if route.opt.get("counts_requests"):
                count_rejected(service, headers.get("x-iapo-task"), headers.get("x-iapo-tier"), exc)
            raise

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    @post("/v1/chat/completions", status_code=200, opt={"counts_requests": True})
    async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
        try:
            return await handle_chat(service, request)
        except ClientGone:
            return client_gone_response()

    @get("/v1/models")
    async def models() -> Response[bytes]:
        registry = service.registry
        assert registry is not None
        data: list[dict[str, Any]] = [
            {"id": alias, "object": "model", "created": 0, "owned_by": "iapo", "task": task}
            for alias, task in sorted(registry.aliases.items())
        ]
        if config.passthrough:
            seen = {d["id"] for d in data}
            for spec in config.upstreams:
                if spec.model not in seen:
                    seen.add(spec.model)
                    data.append(
                        {"id": spec.model, "object": "model", "created": 0, "owned_by": spec.name}
                    )
        return _json({"object": "list", "data": data})

    @get("/metrics", opt={"open": auth.open_metrics})
    async def metrics_endpoint() -> Response[bytes]:
        service.refresh_circuits()
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @get("/healthz", opt={"open": auth.open_health})
    async def healthz() -> Response[bytes]:
        return _json({"status": "ok"})

    @get("/readyz", opt={"open": auth.open_health})
    async def readyz() -> Response[bytes]:
        if not service.ready or service.registry is None:
            return _json({"status": "not ready"}, 503)
        tasks = {name: served.label for name, served in service.registry.tasks.items()}
        rejected = service.registry.rejected
        if rejected:
            # Still serving (the previous policies), so still ready for traffic: 200.
            return _json(
                {
                    "status": "degraded",
                    "tasks": tasks,
                    "rejected": rejected,
                    "in_flight": service.in_flight,
                }
            )
        return _json({"status": "ready", "tasks": tasks, "in_flight": service.in_flight})

    app = Litestar(
        route_handlers=[chat_completions, models, metrics_endpoint, healthz, readyz],
        guards=[require_key],
        lifespan=[lifespan],
        exception_handlers=error_handlers,
        openapi_config=None,
        logging_config=None,
        debug=False,
        request_max_body_size=config.server.max_body_bytes,
    )
    app.state.service = service
    return app
