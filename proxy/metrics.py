"""Prometheus metrics of the proxy (prefix ``iapo_``): the contract the dashboards read.

Names and labels are fixed (see DESIGN.md and deploy/). Labels are bounded: a task or
tier the proxy does not serve is reported as ``other``, never as the client's string,
and nothing user-specific (key, request id, text) ever becomes a label.

    metrics = ProxyMetrics()                        # its own CollectorRegistry
    metrics.allow(tasks=["math"], tiers=["economy", "standard", "premium"])
    metrics.requests.labels("math", "standard", "majority", "2xx").inc()
    body = metrics.render()                         # the /metrics payload
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "CIRCUIT_STATES",
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "ERROR_KINDS",
    "OTHER",
    "PASSTHROUGH",
    "SAMPLE_BUCKETS",
    "ProxyMetrics",
    "status_class",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"
PASSTHROUGH = "passthrough"

# LLM calls take from milliseconds (cached, tiny) to minutes (long reasoning, N=32).
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
SAMPLE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
WAVE_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 16, 32)
SHARE_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SCORE_BUCKETS: tuple[float, ...] = (-10, -5, -2, -1, -0.5, 0, 0.25, 0.5, 0.75, 1, 2, 5, 10)

ERROR_KINDS: tuple[str, ...] = (
    "timeout",
    "connect",
    "rate_limited",
    "server_error",
    "bad_response",
    "circuit_open",
    "cancelled",
)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


def status_class(status: int) -> str:
    """``"2xx"``, ``"4xx"`` or ``"5xx"`` (anything else is reported as ``"5xx"``)."""
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"


class ProxyMetrics:
    """Every metric the proxy exports, registered on one registry.

    Pass a registry to share it (tests create one each); the default is a fresh
    ``CollectorRegistry``, not the process-global one, so two apps in one process
    never collide.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._tasks: frozenset[str] = frozenset({PASSTHROUGH})
        self._tiers: frozenset[str] = frozenset()
        self._upstreams: frozenset[str] = frozenset()
        self._policy_info: dict[tuple[str, str], tuple[str, ...]] = {}
        r = self.registry
        tt = ("task", "tier")
        tts = ("task", "tier", "strategy")
        self.requests = Counter(
            "iapo_requests_total",
            "Chat completion requests answered, by outcome status class.",
            (*tts, "status_class"),
            registry=r,
        )
        self.request_duration = Histogram(
            "iapo_request_duration_seconds",
            "End-to-end latency of a request through the proxy.",
            tts,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "iapo_upstream_request_duration_seconds",
            "Latency of one upstream call (one sample, or one call with n samples).",
            ("upstream",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "iapo_upstream_requests_total",
            "Upstream calls, by response status class.",
            ("upstream", "status_class"),
            registry=r,
        )
        self.upstream_errors = Counter(
            "iapo_upstream_errors_total",
            "Failed upstream calls, by kind: " + ", ".join(ERROR_KINDS) + ".",
            ("upstream", "kind"),
            registry=r,
        )
        self.samples_per_request = Histogram(
            "iapo_samples_per_request",
            "Samples drawn for one request.",
            tts,
            buckets=SAMPLE_BUCKETS,
            registry=r,
        )
        self.samples = Counter(
            "iapo_samples_total", "Samples drawn from upstreams.", tt, registry=r
        )
        self.prompt_tokens = Counter(
            "iapo_prompt_tokens_total", "Prompt tokens billed by upstreams.", tt, registry=r
        )
        self.completion_tokens = Counter(
            "iapo_completion_tokens_total",
            "Completion tokens billed by upstreams.",
            tt,
            registry=r,
        )
        self.cost = Counter(
            "iapo_cost_total", "Cost of all samples, in the upstream price unit.", tt, registry=r
        )
        self.vote_agreement = Histogram(
            "iapo_vote_agreement",
            "Share of samples that voted for the chosen answer (majority vote).",
            tt,
            buckets=SHARE_BUCKETS,
            registry=r,
        )
        self.reward_score = Histogram(
            "iapo_reward_score",
            "Weighted reward of the chosen sample (Best-of-N).",
            tt,
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        # prometheus_client exports no _sum for a histogram whose lowest bucket is below
        # 0, and a counter cannot go down: the sum of scores is kept as two counters, one
        # per sign. Mean = (rate(positive) - rate(negative)) / rate(iapo_reward_score_count).
        self.reward_score_sum = Counter(
            "iapo_reward_score_signed_sum_total",
            "Sum of the absolute rewards of chosen samples, by sign (the histogram has no "
            "_sum because its buckets go below 0).",
            (*tt, "sign"),
            registry=r,
        )
        self.extraction_failures = Counter(
            "iapo_extraction_failures_total",
            "Samples whose answer could not be extracted.",
            tt,
            registry=r,
        )
        self.in_flight = Gauge(
            "iapo_in_flight_requests", "Requests being served now.", ("task",), registry=r
        )
        self.policy_info = Gauge(
            "iapo_policy_info",
            "The active policy per task and tier (value 1; policy = content digest).",
            ("task", "tier", "prompt", "n", "strategy", "policy"),
            registry=r,
        )
        self.policy_n = Gauge("iapo_policy_n", "N of the active policy.", tt, registry=r)
        self.policy_reloads_rejected = Counter(
            "iapo_policy_reloads_rejected_total",
            "New policies (file changes, store revisions) rejected; the previous one kept serving.",
            ("task",),
            registry=r,
        )
        self.policy_rejected = Gauge(
            "iapo_policy_rejected",
            "1 while a task's newest policy is rejected and an older one is served (/readyz "
            "says degraded).",
            ("task",),
            registry=r,
        )
        self.circuit_state = Gauge(
            "iapo_circuit_state",
            "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.",
            ("upstream",),
            registry=r,
        )
        self.n_capped = Counter(
            "iapo_n_capped_total",
            "Requests whose N a tier cap (max_n, max_cost) reduced.",
            tt,
            registry=r,
        )
        self.early_stopped = Counter(
            "iapo_early_stopped_total",
            "Requests whose stopping rule ended sampling before all N samples were drawn "
            "(a decided majority vote, or a Best-of-N reward at the tier's threshold).",
            tt,
            registry=r,
        )
        self.samples_saved = Counter(
            "iapo_samples_saved_total",
            "Samples of N not drawn because the stopping rule stopped the request early.",
            tt,
            registry=r,
        )
        self.vote_stops = Counter(
            "iapo_vote_stops_total",
            "Requests that drew samples, by how they stopped: full (all N), exact (the vote "
            "could not change), confident (the leader almost surely wins the full vote) or "
            "threshold (Best-of-N: a reward reached the tier's threshold).",
            (*tt, "reason"),
            registry=r,
        )
        self.sampling_waves = Histogram(
            "iapo_sampling_waves",
            "Rounds of upstream calls launched for one request (1: all at once).",
            tt,
            buckets=WAVE_BUCKETS,
            registry=r,
        )
        self.upstream_resends = Counter(
            "iapo_upstream_resends_total",
            "Calls sent again though the upstream may have processed them (a broken "
            "response, a 502/504); bounded per request by retry.max_resends.",
            ("upstream",),
            registry=r,
        )
        self.request_log_lost = Counter(
            "iapo_request_log_lost_total",
            "Request-log rows not written: dropped (queue full) or failed (the row "
            "could not be stored).",
            ("reason",),
            registry=r,
        )

    # -- bounded labels -------------------------------------------------------------

    def allow(
        self,
        *,
        tasks: Iterable[str] = (),
        tiers: Iterable[str] = (),
        upstreams: Iterable[str] = (),
    ) -> None:
        """Add the task, tier and upstream names that may appear as label values."""
        self._tasks = self._tasks | frozenset(tasks)
        self._tiers = self._tiers | frozenset(tiers)
        self._upstreams = self._upstreams | frozenset(upstreams)

    def task(self, name: str | None) -> str:
        """The label for a task name: itself if served, else ``other``."""
        return name if name in self._tasks else OTHER

    def tier(self, name: str | None) -> str:
        """The label for a tier name: itself if configured, else ``other``."""
        return name if name in self._tiers else OTHER

    def upstream(self, name: str) -> str:
        return name if name in self._upstreams else OTHER

    # -- helpers for the state gauges -----------------------------------------------

    def set_policy(
        self, task: str, tier: str, *, prompt: str, n: int, strategy: str, policy: str
    ) -> None:
        """Publish the active policy of (task, tier), removing the one it replaces."""
        task, tier = self.task(task), self.tier(tier)
        labels = (task, tier, prompt, str(n), strategy, policy)
        previous = self._policy_info.get((task, tier))
        if previous is not None and previous != labels:
            self.policy_info.remove(*previous)
        self._policy_info[(task, tier)] = labels
        self.policy_info.labels(*labels).set(1)
        self.policy_n.labels(task, tier).set(n)

    def observe_reward(self, task: str, tier: str, score: float) -> None:
        """One chosen sample's weighted reward: the histogram and the signed sums."""
        self.reward_score.labels(task, tier).observe(score)
        self.reward_score_sum.labels(task, tier, "positive").inc(max(score, 0.0))
        self.reward_score_sum.labels(task, tier, "negative").inc(max(-score, 0.0))

    def set_circuit(self, upstream: str, state: str) -> None:
        """``state`` is one of ``closed``, ``half_open``, ``open``."""
        self.circuit_state.labels(self.upstream(upstream)).set(CIRCUIT_STATES[state])

    def render(self) -> bytes:
        """The text exposition of every metric (the body of ``GET /metrics``)."""
        return generate_latest(self.registry)
