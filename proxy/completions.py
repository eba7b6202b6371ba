"""One task request run: draw N samples, aggregate, and the immutable outcome.

    spent = SamplingResult(samples=[])
    aggregate = await run_task(service, plan, deadline, spent)   # ApiError if none arrived
    outcome = task_outcome(plan, spent, aggregate)               # TaskOutcome
    outcome.body(), outcome.headers()                            # the response
    account_task(service, outcome, latency_s)                    # metrics and the request log

``spent`` is filled as samples arrive, so a request that fails or whose client leaves
still has its outcome (what it cost) built from it. The tier's caps were applied when the
request was planned (``proxy.route``). If some samples fail the rest are aggregated; if
all fail, the error keeps the upstream's class (429 with ``retry-after``, 503, 504, else
502). If the reward service fails, Best-of-N answers with the first sample and
``x-iapo-unranked`` says why.

A Best-of-N tier served under ``stop = "threshold"`` scores each wave as it arrives
(:class:`_WaveScorer`) and stops at the first weighted reward at or above the policy's
threshold; it answers the best sample scored. If the reward service fails mid-way the
rest of N is drawn unscored (what fixed N would have drawn), the best sample scored
before the failure is the answer (the first sample if none was), and
``x-iapo-unranked`` says why.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import TypeVar

import msgspec
import numpy as np

from policies import (
    ApiError,
    RateLimited,
    StopKind,
    StopRule,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    best_of_n,
    majority_vote,
    weight_vector,
)
from proxy.metrics import status_class
from proxy.requestlog import RequestRecord
from proxy.route import TaskPlan
from proxy.sampling import Sample, SamplingResult, draw_samples
from proxy.service import ProxyService
from proxy.taskfields import tool_call_key
from proxy.upstream import error_kind

__all__ = ["Aggregate", "TaskOutcome", "account_task", "all_failed", "run_task", "task_outcome"]

FULL = StopRule(kind="full")

E = TypeVar("E", bound=ApiError)

logger = logging.getLogger(__name__)


class Aggregate(msgspec.Struct, frozen=True):
    """How the samples were aggregated: ``ranked`` best first (distinct answers), the
    vote's agreement or the chosen sample's score, why it is unranked if it is."""

    ranked: list[Sample]
    agreement: float | None = None
    score: float | None = None
    unranked: str | None = None
    unextractable: int = 0


class TaskOutcome(msgspec.Struct, frozen=True):
    """What one task request did, read by the response, the metrics and the log.

    ``status`` is the HTTP status it ended with (499: the client left); ``choices`` the
    returned sample (empty if it failed); the counts and tokens are what was spent.
    """

    plan: TaskPlan
    status: int
    id: str
    created: int
    model: str
    choices: tuple[Sample, ...]
    launched: int
    used: int
    failed: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    early_stopped: bool
    first_text: str | None = None
    agreement: float | None = None
    score: float | None = None
    unranked: str | None = None
    unextractable: int = 0
    error: ApiError | None = None
    stopped: StopKind = "full"
    waves: int = 0
    decided_at: int | None = None

    @property
    def cost(self) -> float:
        return self.plan.spec.cost(self.prompt_tokens, self.completion_tokens)

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def headers(self) -> dict[str, str]:
        """The ``x-iapo-*`` headers of the answer (a stream repeats the last ones)."""
        headers = self.plan.start_headers()
        headers["x-iapo-samples"] = f"{self.used}/{self.launched}"
        headers["x-iapo-cost"] = f"{self.cost:.6g}"
        if self.agreement is not None:
            headers["x-iapo-agreement"] = f"{self.agreement:.4f}"
        if self.score is not None:
            headers["x-iapo-score"] = f"{self.score:.6g}"
        if self.unranked is not None:
            headers["x-iapo-unranked"] = self.unranked
        if self.early_stopped:
            headers["x-iapo-early-stopped"] = "true"
        if self.launched:
            headers["x-iapo-stopped"] = self.stopped
        return headers

    def body(self) -> bytes:
        """The OpenAI chat completion body of a successful outcome."""
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
                        "logprobs": s.logprobs,
                        "finish_reason": s.finish_reason or "stop",
                    }
                    for i, s in enumerate(self.choices)
                ],
                "usage": self.usage,
            }
        )


def task_outcome(
    plan: TaskPlan,
    spent: SamplingResult,
    aggregate: Aggregate | None = None,
    *,
    status: int = 200,
    error: ApiError | None = None,
) -> TaskOutcome:
    """Freeze what a run spent (and, if it answered, how it aggregated) into an outcome."""
    aggregate = aggregate or Aggregate(ranked=[])
    return TaskOutcome(
        plan=plan,
        status=status,
        id=f"chatcmpl-iapo-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=plan.view.model or spent.model or plan.spec.model,
        choices=tuple(aggregate.ranked[:1]),  # one answer: n > 1 is refused in task mode
        launched=spent.launched,
        used=len(spent.samples),
        failed=spent.failed,
        cancelled=spent.cancelled,
        prompt_tokens=spent.prompt_tokens,
        completion_tokens=spent.completion_tokens,
        early_stopped=spent.early_stopped,
        stopped=spent.stopped,
        waves=spent.waves,
        decided_at=spent.decided_at,
        first_text=spent.samples[0].text if spent.samples else None,
        agreement=aggregate.agreement,
        score=aggregate.score,
        unranked=aggregate.unranked,
        unextractable=aggregate.unextractable,
        error=error,
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


async def run_task(
    service: ProxyService, plan: TaskPlan, deadline: float, spent: SamplingResult
) -> Aggregate:
    """Sample into ``spent`` and aggregate; raises ApiError if no sample arrived."""
    majority = plan.choice.strategy == "majority"
    rule = plan.served.stops[plan.tier_name]
    judge = None
    if not majority and rule.kind == "threshold":
        judge = _WaveScorer(service, plan, deadline)
    elif not majority or plan.fields.tools:
        rule = FULL
    # The policy's expected samples were priced under its own rule at its own N.
    priced = (rule.kind, rule.delta, plan.n) == (plan.choice.stop, plan.choice.delta, plan.choice.n)
    key = wave_key(plan)
    await draw_samples(
        service.upstreams[plan.spec.name],
        plan.body,
        n=plan.n,
        supports_n=plan.spec.supports_n,
        extractor=plan.fields.extractor if majority else None,
        stop=rule,
        deadline=deadline,
        seed=plan.view.seed,
        first_wave=service.waves.first_wave(
            key, plan.n, plan.choice.expected_samples if priced else None
        ),
        # Later waves too for exact stopping (for confident they cost more than they gain:
        # bench/README.md, "Stopping early").
        decision_points=service.waves.learned(key) if rule.kind == "exact" else (),
        result=spent,
        judge=judge,
    )
    if not spent.samples:
        raise all_failed(spent.errors, spent.launched)
    if majority:
        return _vote(service, plan, spent.samples)
    if judge is not None:
        return judge.aggregate(spent.samples)
    return await _best_of_n(service, plan, spent.samples, deadline)


def wave_key(plan: TaskPlan) -> tuple[str, str, int]:
    """Whose decision points size a request's first wave: its task, tier and N."""
    return (plan.served.name, plan.tier_name, plan.n)


def _vote(service: ProxyService, plan: TaskPlan, samples: list[Sample]) -> Aggregate:
    keys = [s.answer for s in samples]
    if plan.fields.tools:
        # A sample that calls tools votes with its canonical calls, one that answers in
        # text with its extracted answer.
        keys = [tool_call_key(s.message) or k for s, k in zip(samples, keys, strict=True)]
    outcome = majority_vote(keys, service.rng)
    first: dict[str, Sample] = {}
    for sample, key in zip(samples, keys, strict=True):
        if key is not None:
            first.setdefault(key, sample)
    ranked = [first[a] for a in outcome.ranked()]
    return Aggregate(
        ranked=_distinct(ranked + samples),
        agreement=outcome.agreement,
        unextractable=outcome.unextractable,
    )


async def _best_of_n(
    service: ProxyService, plan: TaskPlan, samples: list[Sample], deadline: float
) -> Aggregate:
    reward = plan.served.reward  # the task config's override, else the policy's
    assert reward is not None  # Policy guarantees it for best_of_n tiers
    scorer = service.scorer(reward)
    try:
        matrix = await scorer.score(plan.messages, [s.text for s in samples], deadline=deadline)
    except ApiError as exc:
        logger.warning(
            "task %s: reward service failed, answering sample 0: %s", plan.served.name, exc
        )
        return Aggregate(
            ranked=_distinct(samples), unranked=f"reward service failed ({error_kind(exc)})"
        )
    weights = weight_vector(scorer.objectives, plan.tier.objective_weights)
    outcome = best_of_n(matrix, weights, service.rng)
    if outcome.index is None:
        return Aggregate(ranked=_distinct(samples))
    return Aggregate(
        ranked=_distinct([samples[i] for i in outcome.ranked()] + samples), score=outcome.score
    )


class _WaveScorer:
    """Scores each wave of a threshold tier's samples; stops at the tier's threshold.

    ``scores`` holds the weighted reward of every sample judged so far, in arrival order
    (NaN: not scored). After a reward-service failure it judges no more (None).
    """

    def __init__(self, service: ProxyService, plan: TaskPlan, deadline: float) -> None:
        reward = plan.served.reward
        assert reward is not None  # Policy guarantees it for best_of_n tiers
        threshold = plan.choice.threshold
        assert threshold is not None  # proxy.tasks refuses a threshold rule without one
        self.plan, self.deadline, self.threshold = plan, deadline, threshold
        self.scorer = service.scorer(reward)
        self.weights = weight_vector(self.scorer.objectives, plan.tier.objective_weights)
        self.rng = service.rng
        self.scores: list[float] = []
        self.error: ApiError | None = None

    async def __call__(self, samples: Sequence[Sample]) -> bool | None:
        if self.error is not None:
            self.scores.extend([math.nan] * len(samples))
            return None
        texts = [s.text for s in samples]
        try:
            matrix = await self.scorer.score(self.plan.messages, texts, deadline=self.deadline)
        except ApiError as exc:
            logger.warning(
                "task %s: reward service failed after %d scored samples; drawing the rest "
                "of N unscored: %s",
                self.plan.served.name,
                len(self.scores),
                exc,
            )
            self.error = exc
            self.scores.extend([math.nan] * len(samples))
            return None
        wave = np.asarray(matrix, dtype=np.float64) @ self.weights
        self.scores.extend(float(x) for x in wave)
        return bool(np.any(wave >= self.threshold))  # NaN (unscored) never stops

    def aggregate(self, samples: list[Sample]) -> Aggregate:
        """The samples ranked by their scores (the best one first)."""
        scores = np.full(len(samples), np.nan)
        scores[: len(self.scores)] = self.scores[: len(samples)]
        outcome = best_of_n(scores[:, None], np.ones(1), self.rng)
        unranked = None
        if self.error is not None:
            unranked = f"reward service failed ({error_kind(self.error)})"
        if outcome.index is None:
            return Aggregate(ranked=_distinct(samples), unranked=unranked)
        return Aggregate(
            ranked=_distinct([samples[i] for i in outcome.ranked()] + samples),
            score=outcome.score,
            unranked=unranked,
        )


def _distinct(samples: list[Sample]) -> list[Sample]:
    seen: set[str] = set()
    out: list[Sample] = []
    for sample in samples:
        key = sample.answer if sample.answer is not None else "\x00" + sample.text
        if key not in seen:
            seen.add(key)
            out.append(sample)
    return out


def account_task(service: ProxyService, outcome: TaskOutcome, latency_s: float) -> None:
    """Queue the request's log row and count it in the metrics (the row first: a metric
    that fails must not take the row with it)."""
    log = service.request_log
    if log is not None:
        log.record(record_of(outcome, latency_s, content=log.log_content))
    plan, metrics = outcome.plan, service.metrics
    task, tier = plan.served.name, metrics.tier(plan.tier_name)
    strategy = plan.choice.strategy
    metrics.requests.labels(task, tier, strategy, status_class(outcome.status)).inc()
    metrics.request_duration.labels(task, tier, strategy).observe(latency_s)
    if plan.capped:
        metrics.n_capped.labels(task, tier).inc()
    if outcome.launched:
        metrics.samples_per_request.labels(task, tier, strategy).observe(outcome.launched)
        metrics.samples.labels(task, tier).inc(outcome.launched)
        metrics.prompt_tokens.labels(task, tier).inc(outcome.prompt_tokens)
        metrics.completion_tokens.labels(task, tier).inc(outcome.completion_tokens)
        metrics.cost.labels(task, tier).inc(outcome.cost)
        if outcome.early_stopped:
            metrics.early_stopped.labels(task, tier).inc()
            metrics.samples_saved.labels(task, tier).inc(max(0, plan.n - outcome.launched))
        metrics.vote_stops.labels(task, tier, outcome.stopped).inc()
        metrics.sampling_waves.labels(task, tier).observe(outcome.waves)
        if outcome.used:
            per_sample = outcome.completion_tokens / outcome.used
            means = service.mean_completion_tokens
            means[task] = 0.9 * means.get(task, per_sample) + 0.1 * per_sample
    service.waves.record(wave_key(plan), outcome.decided_at)
    if outcome.agreement is not None:
        metrics.vote_agreement.labels(task, tier).observe(outcome.agreement)
    if outcome.unextractable:
        metrics.extraction_failures.labels(task, tier).inc(outcome.unextractable)
    if outcome.score is not None:
        metrics.observe_reward(task, tier, outcome.score)


def record_of(outcome: TaskOutcome, latency_s: float, *, content: bool = False) -> RequestRecord:
    """The request-log row of an outcome (messages and answer only with ``content``)."""
    plan, error = outcome.plan, outcome.error
    text = None
    if content:
        # The answer returned; for a request that returned none, the first sample drawn.
        answer = outcome.choices[0].text if outcome.choices else outcome.first_text
        text = msgspec.json.encode({"messages": plan.messages, "answer": answer})
    return RequestRecord(
        ts=time.time(),
        task=plan.served.name,
        tier=plan.tier_name,
        strategy=plan.choice.strategy,
        policy=plan.served.label,
        n_policy=plan.n_policy,
        n_served=plan.n,
        samples_launched=outcome.launched,
        samples_used=outcome.used,
        samples_failed=outcome.failed,
        samples_cancelled=outcome.cancelled,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        cost=outcome.cost,
        agreement=outcome.agreement,
        score=outcome.score,
        early_stopped=outcome.early_stopped,
        latency_s=latency_s,
        status=outcome.status,
        error=None if error is None else error.code or type(error).__name__,
        content=None if text is None else text.decode(),
        stopped=outcome.stopped if outcome.launched else None,
    )
