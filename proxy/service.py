"""The proxy's long-lived parts and their lifecycle: clients, breakers, tasks, log, reload.

``ProxyService`` is built once per app. ``start`` opens one ``httpx.AsyncClient`` per
upstream (a connection pool sized to its concurrency limit), the policy store, the
request log, loads every task's policy and starts the hot-reload poller; ``stop``
drains in-flight requests (bounded), flushes the request log and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Mapping

import httpx
import numpy as np

from policies import PolicyStore, RewardSpec, SqlitePolicyStore, UpstreamSpec
from proxy.auth import KeyChecker
from proxy.breaker import CircuitBreaker, CircuitState
from proxy.config import ProxyConfig
from proxy.metrics import ProxyMetrics
from proxy.requestlog import RequestLog
from proxy.reward import RewardScorer
from proxy.tasks import TaskRegistry
from proxy.transport import LeanTransport
from proxy.upstream import UpstreamClient
from proxy.waves import WaveHistory

__all__ = ["ProxyService"]

logger = logging.getLogger(__name__)

# Connections per httpx pool; an upstream gets max_concurrency / SHARD_SIZE pools.
SHARD_SIZE = 16


class ProxyService:
    """Everything a request handler needs, created at start-up and closed at shutdown.

    ``transports`` maps upstream names (and ``"reward"``) to httpx transports, so tests
    can script upstreams in-process; ``store`` injects an open policy store.
    """

    def __init__(
        self,
        config: ProxyConfig,
        *,
        metrics: ProxyMetrics | None = None,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        store: PolicyStore | None = None,
        rng: np.random.Generator | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self.rng = rng if rng is not None else np.random.default_rng()
        self.keys = KeyChecker(config.auth, env)
        self._transports = dict(transports or {})
        self._store = store
        self._own_store = False
        self._jitter = random.Random(int(self.rng.integers(2**32)))
        self.upstreams: dict[str, UpstreamClient] = {}
        self.specs: dict[str, UpstreamSpec] = {u.name: u for u in config.upstreams}
        self._by_model: dict[str, str] = {}
        for spec in config.upstreams:
            self._by_model.setdefault(spec.model, spec.name)
        self._http: list[httpx.AsyncClient] = []
        self.lean: dict[str, LeanTransport] = {}
        self._ssl: ssl.SSLContext | None = None
        self._scorers: dict[RewardSpec, RewardScorer] = {}
        self.registry: TaskRegistry | None = None
        self.request_log: RequestLog | None = None
        self._poller: asyncio.Task[None] | None = None
        self.in_flight = 0
        # Mean completion tokens per sample by task: the max_cost estimate before sampling.
        self.mean_completion_tokens: dict[str, float] = {}
        # Where votes decided by (task, tier, N): sizes an early-stopping first wave.
        self.waves = WaveHistory()
        self._idle = asyncio.Event()
        self.ready = False
        self.metrics.allow(upstreams=self.specs)

    # -- construction -----------------------------------------------------------------

    def _clients(
        self, name: str, url: str, *, pool: int, connect_timeout_s: float
    ) -> list[httpx.AsyncClient]:
        """The connection pools for one upstream.

        Plain-HTTP upstreams get :class:`LeanTransport` (one O(1) pool); others get httpx's
        own transport in shards of at most SHARD_SIZE connections, because httpcore's pool
        costs O(connections x waiting requests) per event at high concurrency.
        """
        transport = self._transports.get(name)
        lean = (
            transport is None
            and url.startswith("http://")
            and self.config.server.upstream_transport == "lean"
        )
        if lean:
            transport = self.lean[name] = LeanTransport(max_connections=pool)
        shards = 1 if transport is not None else -(-pool // SHARD_SIZE)
        size = -(-pool // shards)
        clients = []
        if self._ssl is None:
            # One context for every pool: loading the CA bundle costs ~20 ms each time.
            self._ssl = ssl.create_default_context()
        for _ in range(shards):
            http = httpx.AsyncClient(
                transport=transport,
                verify=self._ssl,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                timeout=httpx.Timeout(None, connect=connect_timeout_s),
                # No gzip on our hop: decompressing costs CPU and breaks byte-faithfulness.
                headers={"accept-encoding": "identity"},
            )
            self._http.append(http)
            clients.append(http)
        return clients

    def _breaker(self, name: str) -> CircuitBreaker:
        def on_change(state: CircuitState) -> None:
            self.metrics.set_circuit(name, state)

        return CircuitBreaker(
            name,
            failure_threshold=self.config.breaker.failure_threshold,
            cooldown_s=self.config.breaker.cooldown_s,
            on_change=on_change,
        )

    async def start(self) -> None:
        """Open clients, the store and the request log; load every task's policy."""
        for spec in self.config.upstreams:
            http = self._clients(
                spec.name,
                spec.base_url,
                pool=spec.max_concurrency,
                connect_timeout_s=spec.connect_timeout_s,
            )
            self.upstreams[spec.name] = UpstreamClient.from_spec(
                spec,
                http,
                retry=self.config.retry,
                breaker=self._breaker(spec.name),
                metrics=self.metrics,
                rng=self._jitter,
                lean=self.lean.get(spec.name),
            )
        if self._store is None and self.config.store.path is not None:
            self._store = await SqlitePolicyStore.open(self.config.store.path)
            self._own_store = True
        self.registry = TaskRegistry(self.config, self.metrics, self._store)
        await self.registry.load()
        if self.config.request_log.path is not None:
            self.request_log = await RequestLog.open(self.config.request_log, self.metrics)
        if self.config.tasks:
            self._poller = asyncio.create_task(self._poll(), name="iapo-policy-reload")
        self._idle.set()
        self.ready = True

    async def _poll(self) -> None:
        assert self.registry is not None
        while True:
            await asyncio.sleep(self.config.store.poll_interval_s)
            try:
                await self.registry.refresh()
            except Exception:  # the poller must outlive any one bad read
                logger.exception("policy reload failed")

    def scorer(self, spec: RewardSpec) -> RewardScorer:
        """The reward scorer for ``spec`` (one client per reward service, made on first use)."""
        scorer = self._scorers.get(spec)
        if scorer is None:
            name = "reward"
            self.metrics.allow(upstreams=[name])
            key = None
            if spec.api_key_env is not None:
                key = UpstreamSpec(spec.url, "reward", api_key_env=spec.api_key_env).api_key()
            client = UpstreamClient(
                name,
                self._clients(name, spec.url, pool=64, connect_timeout_s=5.0),
                url=spec.url,
                headers={"authorization": f"Bearer {key}"} if key else {},
                timeout_s=spec.timeout_s,
                connect_timeout_s=min(5.0, spec.timeout_s),
                max_concurrency=64,
                max_retries=2,
                retry=self.config.retry,
                breaker=self._breaker(name),
                metrics=self.metrics,
                rng=self._jitter,
                lean=self.lean.get(name),
            )
            scorer = self._scorers[spec] = RewardScorer(spec, client)
        return scorer

    def refresh_circuits(self) -> None:
        """Let open circuits whose cool-down has passed show as half-open.

        A breaker moves on only when a call asks it; without traffic the
        ``iapo_circuit_state`` gauge would say "open" long after the cool-down (and an
        alert on it would fire for an idle proxy). ``/metrics`` calls this first.
        """
        clients = [*self.upstreams.values(), *(s.client for s in self._scorers.values())]
        for client in clients:
            _ = client.breaker.state  # reading the state applies a due transition

    def passthrough_upstream(self, model: str | None) -> UpstreamClient:
        """Where a request for no task goes: the upstream serving ``model``, else the default."""
        name = self._by_model.get(model) if model is not None else None
        if name is None:
            name = self.config.passthrough_upstream or self.config.upstreams[0].name
        return self.upstreams[name]

    # -- request accounting and shutdown ----------------------------------------------

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def stop(self) -> None:
        """Drain in-flight requests (bounded), flush the log, close clients and the store."""
        self.ready = False
        if self.in_flight:
            logger.info("draining %d in-flight requests", self.in_flight)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.config.server.drain_timeout_s)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.request_log is not None:
            await self.request_log.close()
        for http in self._http:
            await http.aclose()
        if self._own_store and self._store is not None:
            await self._store.close()
