"""One task request: apply the tier's policy, draw N samples, aggregate, account.

    call = TaskCall(service, served, view, body, tier_name="economy")
    answer = await call.run(deadline)          # Answer: choices, usage, headers
    call.finish(200, latency_s)                # metrics and the request log

The tier's caps (``max_n``, ``max_cost``) reduce N before anything is sent, and the
``x-iapo-n-capped`` header says so. If some samples fail the rest are aggregated;
if all fail, the error keeps the upstream's class (429 with ``retry-after``, 503,
504, else 502). If the reward service fails, Best-of-N answers with the first
sample and ``x-iapo-unranked`` says why.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from policies import (
    ApiError,
    RateLimited,
    UnknownTier,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    best_of_n,
    majority_vote,
    weight_vector,
)
from proxy.metrics import status_class
from proxy.request import ChatView
from proxy.requestlog import RequestRecord
from proxy.sampling import Sample, SamplingResult, draw_samples
from proxy.service import ProxyService
from proxy.tasks import ServedTask
from proxy.upstream import error_kind

__all__ = ["Answer", "TaskCall", "all_failed"]

E = TypeVar("E", bound=ApiError)

logger = logging.getLogger(__name__)


class Answer(msgspec.Struct, frozen=True):
    """The aggregated answer: the returned samples, best first, and the summed usage."""

    id: str
    created: int
    model: str
    choices: list[Sample]
    usage: dict[str, int]
    headers: dict[str, str]

    def body(self) -> bytes:
        return msgspec.json.encode(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": i,
                        "message": s.message,
                        "logprobs": None,
                        "finish_reason": s.finish_reason or "stop",
                    }
                    for i, s in enumerate(self.choices)
                ],
                "usage": self.usage,
            }
        )


def all_failed(errors: list[ApiError], drawn: int) -> ApiError:
    """The error for a request whose samples all failed, in the upstream's class."""
    last = errors[-1].message if errors else "no sample arrived"
    message = f"all {drawn} samples failed; last upstream error: {last}"
    limited = [e for e in errors if isinstance(e, RateLimited)]
    if limited:
        waits = [e.retry_after for e in limited if e.retry_after is not None]
        return RateLimited(message, retry_after=max(waits) if waits else None)
    rejected = [e for e in errors if e.status_code < 500]
    if rejected:
        return rejected[0]
    unavailable = [e for e in errors if isinstance(e, UpstreamUnavailable)]
    if unavailable:
        waits = [e.retry_after for e in unavailable if e.retry_after is not None]
        cls = _shared_class(unavailable, UpstreamUnavailable)
        return cls(message, retry_after=max(waits) if waits else None)
    if errors and all(isinstance(e, UpstreamTimeout) for e in errors):
        return UpstreamTimeout(message)
    return _shared_class(errors, UpstreamError)(message)


def _shared_class(errors: Sequence[ApiError], default: type[E]) -> type[E]:
    """The class every error has (``CircuitOpen``, ``UpstreamBadResponse``), kept so
    clients, metrics and the request log can tell an open circuit from a failing
    upstream; else ``default``."""
    classes = {type(e) for e in errors}
    if len(classes) == 1:
        cls = classes.pop()
        if issubclass(cls, default):
            return cls
    return default


class TaskCall:
    """One request for a task: resolved tier, planned N, then ``run`` and ``finish``."""

    def __init__(
        self,
        service: ProxyService,
        served: ServedTask,
        view: ChatView,
        body: dict[str, Any],
        tier_name: str | None,
    ) -> None:
        self.service = service
        self.served = served
        self.view = view
        tier_name = tier_name if tier_name is not None else served.policy.default
        if tier_name not in served.tiers:
            raise UnknownTier(
                f"unknown tier {tier_name!r} for task {served.name!r}; valid tiers: "
                f"{', '.join(sorted(served.tiers))}",
                param="X-IAPO-Tier",
            )
        self.tier_name = tier_name
        self.choice, self.tier = served.tiers[tier_name]
        self.spec = served.upstream
        self.upstream = service.upstreams[self.spec.name]
        self.messages = self.choice.prompt.apply(body["messages"])
        self.body = self._upstream_body(body)
        self.n_policy = self.choice.n
        self.n = self.tier.cap_n(self.n_policy, self._cost_per_sample())
        self.result: SamplingResult | None = None
        self.agreement: float | None = None
        self.score: float | None = None
        # Why Best-of-N answered unranked (the reward service failed), for the client.
        self.unranked: str | None = None
        self.unextractable = 0

    def _upstream_body(self, body: dict[str, Any]) -> dict[str, Any]:
        out = dict(body)
        out["messages"] = self.messages
        out["model"] = self.spec.model
        for key in ("stream", "stream_options", "n"):
            out.pop(key, None)
        # Aggregation needs diverse samples: temperature 0 would draw N copies.
        if self.view.temperature is None or self.view.temperature <= 0:
            out["temperature"] = self.spec.temperature
        limits = ("max_tokens", "max_completion_tokens")
        if self.spec.max_tokens is not None and not any(k in out for k in limits):
            out["max_tokens"] = self.spec.max_tokens
        return out

    def _cost_per_sample(self) -> float | None:
        """An estimate before sampling, for ``max_cost``: prompt bytes/4, completion bound."""
        if self.tier.max_cost is None:
            return None
        prompt_tokens = len(msgspec.json.encode(self.messages)) // 4
        completion = (
            self.view.max_completion_tokens
            or self.view.max_tokens
            or self.spec.max_tokens
            or self.service.mean_completion_tokens.get(self.served.name, 0.0)
        )
        return self.spec.cost(prompt_tokens, int(completion))

    @property
    def capped(self) -> bool:
        return self.n < self.n_policy

    def start_headers(self) -> dict[str, str]:
        """Headers known before sampling (all a streaming response can carry)."""
        headers = {
            "x-iapo-task": self.served.name,
            "x-iapo-tier": self.tier_name,
            "x-iapo-policy": self.served.label,
        }
        if self.capped:
            headers["x-iapo-n-capped"] = f"{self.n_policy}->{self.n}"
        return headers

    async def run(self, deadline: float) -> Answer:
        """Sample, aggregate and build the answer; raises ApiError if no sample arrived."""
        strategy = self.choice.strategy
        self.result = result = SamplingResult(samples=[])
        await draw_samples(
            self.upstream,
            self.body,
            n=self.n,
            supports_n=self.spec.supports_n,
            extractor=self.served.extractor if strategy == "majority" else None,
            early_stop=self.served.config.early_stop and strategy == "majority",
            deadline=deadline,
            seed=self.view.seed,
            result=result,
        )
        if not result.samples:
            raise all_failed(result.errors, result.launched)
        if strategy == "majority":
            ranked = self._vote(result.samples)
        else:
            ranked = await self._best_of_n(result.samples, deadline)
        usage = {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }
        headers = self.start_headers()
        headers["x-iapo-samples"] = f"{len(result.samples)}/{result.launched}"
        headers["x-iapo-cost"] = f"{self.cost():.6g}"
        if self.agreement is not None:
            headers["x-iapo-agreement"] = f"{self.agreement:.4f}"
        if self.score is not None:
            headers["x-iapo-score"] = f"{self.score:.6g}"
        if self.unranked is not None:
            headers["x-iapo-unranked"] = self.unranked
        if result.early_stopped:
            headers["x-iapo-early-stopped"] = "true"
        return Answer(
            id=f"chatcmpl-iapo-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=self.view.model or result.model or self.spec.model,
            choices=ranked[: self.view.n],
            usage=usage,
            headers=headers,
        )

    def _vote(self, samples: list[Sample]) -> list[Sample]:
        outcome = majority_vote([s.answer for s in samples], self.service.rng)
        self.agreement = outcome.agreement
        self.unextractable = outcome.unextractable
        first: dict[str, Sample] = {}
        for sample in samples:
            if sample.answer is not None:
                first.setdefault(sample.answer, sample)
        ranked = [first[a] for a in outcome.ranked()]
        return _distinct(ranked + samples)

    async def _best_of_n(self, samples: list[Sample], deadline: float) -> list[Sample]:
        reward = self.served.policy.reward
        assert reward is not None  # Policy guarantees it for best_of_n tiers
        scorer = self.service.scorer(reward)
        texts = [s.text for s in samples]
        try:
            matrix = await scorer.score(self.messages, texts, deadline=deadline)
        except ApiError as exc:
            logger.warning(
                "task %s: reward service failed, answering sample 0: %s", self.served.name, exc
            )
            self.unranked = f"reward service failed ({error_kind(exc)})"
            return _distinct(samples)
        weights = weight_vector(scorer.objectives, self.tier.objective_weights)
        outcome = best_of_n(matrix, weights, self.service.rng)
        if outcome.index is None:
            return _distinct(samples)
        self.score = outcome.score
        return _distinct([samples[i] for i in outcome.ranked()] + samples)

    def cost(self) -> float:
        if self.result is None:
            return 0.0
        return self.spec.cost(self.result.prompt_tokens, self.result.completion_tokens)

    def finish(self, status: int, latency_s: float, error: ApiError | None = None) -> None:
        """Queue the request's log row and count it in the metrics (the row first: a
        metric that fails must not take the row with it)."""
        if self.service.request_log is not None:
            self.service.request_log.record(record_of(self, status, latency_s, error))
        metrics = self.service.metrics
        task, tier = self.served.name, metrics.tier(self.tier_name)
        strategy = self.choice.strategy
        metrics.requests.labels(task, tier, strategy, status_class(status)).inc()
        metrics.request_duration.labels(task, tier, strategy).observe(latency_s)
        if self.capped:
            metrics.n_capped.labels(task, tier).inc()
        result = self.result
        if result is not None:
            metrics.samples_per_request.labels(task, tier, strategy).observe(result.launched)
            metrics.samples.labels(task, tier).inc(result.launched)
            metrics.prompt_tokens.labels(task, tier).inc(result.prompt_tokens)
            metrics.completion_tokens.labels(task, tier).inc(result.completion_tokens)
            metrics.cost.labels(task, tier).inc(self.cost())
            if result.early_stopped:
                metrics.early_stopped.labels(task, tier).inc()
            if result.samples:
                per_sample = result.completion_tokens / len(result.samples)
                means = self.service.mean_completion_tokens
                means[task] = 0.9 * means.get(task, per_sample) + 0.1 * per_sample
        if self.agreement is not None:
            metrics.vote_agreement.labels(task, tier).observe(self.agreement)
        if self.unextractable:
            metrics.extraction_failures.labels(task, tier).inc(self.unextractable)
        if self.score is not None:
            metrics.reward_score.labels(task, tier).observe(self.score)


def _distinct(samples: list[Sample]) -> list[Sample]:
    seen: set[str] = set()
    out: list[Sample] = []
    for sample in samples:
        key = sample.answer if sample.answer is not None else "\x00" + sample.text
        if key not in seen:
            seen.add(key)
            out.append(sample)
    return out


def record_of(
    call: TaskCall, status: int, latency_s: float, error: ApiError | None
) -> RequestRecord:
    result = call.result
    content = None
    if call.service.request_log is not None and call.service.request_log.log_content:
        answer = result.samples[0].text if result and result.samples else None
        content = msgspec.json.encode({"messages": call.messages, "answer": answer}).decode()
    return RequestRecord(
        ts=time.time(),
        task=call.served.name,
        tier=call.tier_name,
        strategy=call.choice.strategy,
        policy=call.served.label,
        n_policy=call.n_policy,
        n_served=call.n,
        samples_launched=result.launched if result else 0,
        samples_used=len(result.samples) if result else 0,
        samples_failed=result.failed if result else 0,
        samples_cancelled=result.cancelled if result else 0,
        prompt_tokens=result.prompt_tokens if result else 0,
        completion_tokens=result.completion_tokens if result else 0,
        cost=call.cost(),
        agreement=call.agreement,
        score=call.score,
        early_stopped=bool(result and result.early_stopped),
        latency_s=latency_s,
        status=status,
        error=None if error is None else error.code or type(error).__name__,
        content=content,
    )
