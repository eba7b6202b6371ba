"""The OpenAI-compatible serving proxy: applies each task's policy to live traffic.

    from proxy import create_app, load_config
    app = create_app(load_config("iapo.toml"))      # a litestar app; serve it with uvicorn

``iapo serve`` runs it (``proxy.server.serve``); ``proxy.server.ServerThread`` serves it
on a background thread (tests, ``iapo demo``).

Modules, outside in: ``app`` (routes, lifespan) → ``chat`` (the endpoint: routing,
pass-through, streaming, disconnects) → ``completions`` (one task request: tier, caps,
aggregation, accounting) → ``sampling`` (waves, early stop, top-ups, cancellation) →
``upstream`` (the httpx seam: breaker, semaphore, deadline, retries, error mapping) →
``transport`` (LeanTransport). Beside them: ``config``, ``service`` (lifecycle),
``tasks`` (policies and hot reload), ``request`` (body and header validation),
``reward`` (iapo contract, vLLM adapter), ``streaming`` (SSE), ``requestlog``,
``metrics``, ``auth``, ``breaker``, ``errors``, ``wire``, ``server``.
"""

from __future__ import annotations

from proxy.app import create_app
from proxy.config import ProxyConfig, load_config, parse_config
from proxy.metrics import ProxyMetrics
from proxy.service import ProxyService

__all__ = [
    "ProxyConfig",
    "ProxyMetrics",
    "ProxyService",
    "create_app",
    "load_config",
    "parse_config",
]
