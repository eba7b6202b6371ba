"""Drawing N samples for one request: in parallel, in waves, stopping early when decided.

One upstream call with ``n=k`` where the upstream honours ``n``, else k concurrent
calls. Without early stopping (``StopRule(kind="full")``) the first wave is all N. With
exact early stopping (majority vote only) each wave is the fewest samples that could
decide the vote: the leader must beat the runner-up even if every sample still to come
went to the runner-up (``policies.vote_decided``), so the answer is the one the full
vote would give. Confident stopping (``policies.StopRule``) also stops once the leader
almost surely wins the full vote; its later waves are the fewest samples that could make it
stop, at most an eighth of N. Samples are
counted as they arrive, and the window slides: as each call returns, more are launched
if those still in flight could no longer decide the vote alone, so a slow call does not
hold back the next wave. A first wave sized from where the tier's votes usually decide
(``proxy.waves``) ends most requests in one round trip, the latency of drawing all N, at
the cost of a few samples; exact stopping sizes its later waves the same way. Once the
rule says stop, calls still running are cancelled. A failed call costs its samples, the
rest still vote.

Best-of-N under ``stop = "threshold"`` is decided on rewards, not votes: the samples
come in the fixed waves of ``policies.threshold_waves`` (one, then pairs), each wave is
handed to a ``judge`` (the proxy scores it with the reward service) before the next is
launched, and sampling stops after the first wave the judge says reached the threshold.
A judge that can no longer judge (the reward service failed) gets the rest of N in one
wave, as fixed-N Best-of-N would have drawn them.

    result = await draw_samples(client, body, n=8, supports_n=True, extractor=extract,
                                stop=StopRule(kind="exact"), deadline=t)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from policies import ApiError, Extractor, StopKind, StopRule, threshold_waves
from proxy.upstream import ResendBudget, UpstreamClient
from proxy.waves import decision_point, wave_target
from proxy.wire import Completion

__all__ = ["Judge", "Sample", "SamplingResult", "draw_samples", "next_wave"]

logger = logging.getLogger(__name__)

# After its first wave a confident vote keeps in flight the fewest samples that could make
# it stop (``confident_wave``), at most N/8 (at least 2): it usually stops mid-wave, and
# every call still in flight then is billed. With N/4 in flight it saved 48% at N=32
# against 68% drawing one at a time (bench/README.md, "Stopping early").
CONFIDENT_WINDOW = 8


class Sample(msgspec.Struct, frozen=True):
    """One sampled completion and the answer extracted from it (None: no answer)."""

    text: str
    message: dict[str, Any]
    finish_reason: str | None
    answer: str | None = None
    logprobs: dict[str, Any] | None = None


class SamplingResult(msgspec.Struct):
    """What one request drew: the samples that arrived, and what it cost.

    ``decided_at``: with early stopping, the fewest of the samples (in arrival order)
    after which the rule said stop (``proxy.waves.decision_point``); None without early
    stopping, or when a failed call left the vote short.
    """

    samples: list[Sample]
    launched: int = 0
    failed: int = 0
    cancelled: int = 0
    calls: int = 0
    waves: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped: StopKind = "full"
    decided_at: int | None = None
    model: str = ""
    errors: list[ApiError] = msgspec.field(default_factory=list)

    @property
    def early_stopped(self) -> bool:
        """Whether the stopping rule left samples undrawn (``stopped`` says which rule)."""
        return self.stopped != "full"


Judge = Callable[[Sequence["Sample"]], Awaitable[bool | None]]
"""Looks at one wave's samples under ``stop = "threshold"``: True to stop (a reward
reached the threshold), False to draw the next wave, None when it can no longer judge
(draw the rest of N at once)."""


def next_wave(counts: Counter[str], remaining: int) -> int:
    """The fewest further samples that could decide the vote (at least 1, at most remaining).

    With leader ``a``, runner-up ``b`` and ``r`` samples to come, x new votes for the
    leader decide it when ``a + x > b + (r − x)``.
    """
    top = counts.most_common(2)
    lead = top[0][1] if top else 0
    second = top[1][1] if len(top) > 1 else 0
    needed = (second + remaining - lead) // 2 + 1
    return max(1, min(remaining, needed))


def confident_wave(counts: Counter[str], remaining: int, stop: StopRule, most: int) -> int:
    """The fewest further samples (at most ``most``, the exact rule's ``next_wave``) after
    which ``stop`` could say stop: all of them votes for the leader (or, with no votes yet,
    for one answer)."""
    leader = counts.most_common(1)[0][0] if counts else ""
    for extra in range(1, most):
        grown = Counter(counts)
        grown[leader] += extra
        if stop.reason(grown, remaining - extra) is not None:
            return extra
    return most


def _call_body(body: dict[str, Any], k: int, seed: int | None) -> dict[str, Any]:
    call = dict(body)
    call["n"] = k
    if seed is not None:
        call["seed"] = seed
    return call


async def draw_samples(
    client: UpstreamClient,
    body: dict[str, Any],
    *,
    n: int,
    supports_n: bool,
    extractor: Extractor | None,
    stop: StopRule,
    deadline: float,
    seed: int | None = None,
    first_wave: int | None = None,
    decision_points: Sequence[int] = (),
    result: SamplingResult | None = None,
    judge: Judge | None = None,
) -> SamplingResult:
    """Draw up to ``n`` samples of ``body`` (stream off, ``n`` set here).

    ``seed``: the client's seed; each call gets ``seed + index of its first sample``
    so samples differ but a request is reproducible. Stopping early needs an extractor.
    ``first_wave``: an early-stopping first wave is at least this many (``proxy.waves``,
    from where the tier's votes have decided), so a vote that decides as usual does so
    in one round trip. ``decision_points``: where earlier votes decided; a vote the calls
    in flight can no longer decide then tops up to ``proxy.waves.wave_target`` of them,
    not just the fewest samples that could decide it. ``judge``: with
    ``stop.kind == "threshold"``, what decides after each wave (:data:`Judge`); without
    one that rule draws all N.
    Raises nothing for failed calls (see ``result.errors``); cancellation cancels
    every call still running before it propagates. Pass ``result`` to see what was
    spent even when cancelled.
    """
    result = result if result is not None else SamplingResult(samples=[])
    counts: Counter[str] = Counter()
    stopping = stop.stops_early and extractor is not None
    pending: dict[asyncio.Task[Completion], int] = {}

    requested = 0  # samples asked for so far, top-ups included: the next seed offset
    # Re-sends of calls the upstream may have processed: bounded per request, not per call.
    budget = ResendBudget(client.retry.max_resends)

    # Without a seed the calls of one size are the same bytes: encode them once (a long
    # conversation fanned out N ways would otherwise be encoded N times).
    encoded: dict[int, bytes] = {}

    def content(size: int, call_seed: int | None) -> bytes:
        if call_seed is not None:
            return msgspec.json.encode(_call_body(body, size, call_seed))
        if size not in encoded:
            encoded[size] = msgspec.json.encode(_call_body(body, size, None))
        return encoded[size]

    def launch(k: int, *, top_up: bool = False) -> None:
        nonlocal requested
        calls = [k] if (supports_n and not top_up) or k == 1 else [1] * k
        for size in calls:
            call_seed = None if seed is None else seed + requested
            call = client.chat(content(size, call_seed), deadline=deadline, budget=budget)
            task = asyncio.ensure_future(call)
            pending[task] = size
            requested += size
            result.calls += 1
        if not top_up:
            result.launched += k
            result.waves += 1

    def settle(task: asyncio.Task[Completion]) -> int:
        """Count a finished call's samples and usage, or its failure; returns how many
        samples it answered short of what it asked for (0 if it failed)."""
        size = pending.pop(task)
        error = task.exception()
        if error is not None:
            result.failed += size
            if not isinstance(error, ApiError):
                raise error
            result.errors.append(error)
            return 0
        got = _collect(task.result(), size, result, counts, extractor)
        if got < size:
            logger.info("upstream %s answered %d of %d choices", client.name, got, size)
        return size - got

    def wave(remaining: int) -> int:
        size = next_wave(counts, remaining)
        if stop.kind != "confident":
            return size
        # Confident stopping may stop long before the vote is decided: the fewest samples
        # that could make it stop, at most an eighth of N.
        return min(confident_wave(counts, remaining, stop, size), max(2, n // CONFIDENT_WINDOW))

    when = asyncio.FIRST_COMPLETED if stopping else asyncio.ALL_COMPLETED
    try:
        if judge is not None and stop.kind == "threshold":
            await _judged_waves(n, judge, launch, settle, pending, result)
            return result
        opening = wave(n) if stopping else n
        if stopping and first_wave is not None:
            opening = max(opening, min(first_wave, n))
        launch(opening)
        while pending:
            # Without early stopping nothing is decided before the last call is in: one
            # wake-up when all are done, not one per call through a busy event loop.
            done, _ = await asyncio.wait(pending, return_when=when)
            for task in done:
                if short := settle(task):
                    # The upstream ignored n or answered fewer choices: ask for the rest
                    # one by one, so N=8 never silently becomes N=1.
                    launch(short, top_up=True)
            unanswered = n - len(result.samples) - result.failed
            if stopping and (reason := stop.reason(counts, unanswered)) is not None:
                if unanswered > 0:
                    result.stopped = reason
                break
            if stopping and result.launched < n:
                # A sliding window: as each call returns, keep enough in flight that the
                # calls still out could decide the vote, instead of waiting for all of them.
                missing = wave(unanswered) - sum(pending.values())
                if missing > 0:
                    # Undecided past the first wave: size the next from the votes that were too.
                    target = wave_target(n, decision_points, result.launched)
                    launch(min(max(missing, target - result.launched), n - result.launched))
            elif not pending and result.launched < n:
                launch(n - result.launched)
        if stopping and not result.failed:
            result.decided_at = decision_point([s.answer for s in result.samples], n, stop)
    finally:
        if pending:
            # Calls that ended while others were awaited still count, and are billed.
            for task in [t for t in pending if t.done() and not t.cancelled()]:
                # an error not of ours is counted as failed; the request is ending anyway
                with contextlib.suppress(Exception):
                    settle(task)
            result.cancelled = sum(pending.values())
            for task in pending:
                task.cancel()
            # wait, not gather: if this task is cancelled again (a server's cancel scope
            # retries), gather would re-cancel the calls and interrupt httpx while it
            # closes their connections; a call is cancelled exactly once. Nothing may be
            # left to wait for: every call had finished when this request was cancelled.
            if pending:
                await asyncio.wait(pending)
    return result


async def _judged_waves(
    n: int,
    judge: Judge,
    launch: Callable[..., None],
    settle: Callable[[asyncio.Task[Completion]], int],
    pending: dict[asyncio.Task[Completion], int],
    result: SamplingResult,
) -> None:
    """The threshold rule's loop: a wave, all of it in (top-ups too), judged, the next."""
    waves = list(threshold_waves(n))
    judged = 0
    launch(waves.pop(0))
    while pending:
        done, _ = await asyncio.wait(pending, return_when=asyncio.ALL_COMPLETED)
        for task in done:
            if short := settle(task):
                launch(short, top_up=True)
        if pending:
            continue  # top-ups for short answers: the wave is not in yet
        fresh, judged = result.samples[judged:], len(result.samples)
        verdict = await judge(fresh) if fresh else False
        if verdict:
            if result.launched < n:
                result.stopped = "threshold"
            return
        if result.launched < n:
            launch(n - result.launched if verdict is None else waves.pop(0))


def _collect(
    completion: Completion,
    size: int,
    result: SamplingResult,
    counts: Counter[str],
    extractor: Extractor | None,
) -> int:
    """Add a call's samples (at most ``size``) and usage; returns how many it added."""
    if completion.usage is not None:
        result.prompt_tokens += completion.usage.prompt_tokens
        result.completion_tokens += completion.usage.completion_tokens
    result.model = result.model or completion.model
    choices = completion.choices[:size]
    for choice in choices:
        text = choice.text
        answer = extractor(text) if extractor is not None else None
        if answer is not None:
            counts[answer] += 1
        message = choice.message or {"role": "assistant", "content": text}
        result.samples.append(
            Sample(text, message, choice.finish_reason, answer, logprobs=choice.logprobs)
        )
    return len(choices)
