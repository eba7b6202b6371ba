"""``POST /v1/chat/completions``: route to a task or pass through, stream or not.

The handler is deliberately lean (raw bytes in, bytes out, no validation layer of the
framework) because it sits in front of all of an app's traffic. It reads in one pass:
the request is resolved into a route (``proxy.route``: a ``TaskPlan``, or pass-through
for a request that names no task) before anything is sent; a task run fills what it
spends and ends in an immutable ``TaskOutcome`` that the response, the metrics and the
request log all read. The API key was checked by the app's guard. A client that
disconnects cancels every upstream call still running for it; what was spent up to then
is still logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.response import Stream

from policies import ApiError, ClientGone, ShuttingDown
from proxy.completions import TaskOutcome, account_task, run_task, task_outcome
from proxy.errors import api_error_response
from proxy.metrics import PASSTHROUGH, status_class
from proxy.request import read_headers
from proxy.requestlog import RequestRecord
from proxy.route import PassthroughRoute, Route, TaskPlan, find_task, plan_task
from proxy.sampling import SamplingResult
from proxy.service import ProxyService
from proxy.streaming import answer_events, error_event, keepalive_then
from proxy.upstream import UpstreamStream
from proxy.wire import RawResponse, Usage

__all__ = ["ClientGone", "count_rejected", "handle_chat"]

logger = logging.getLogger(__name__)

# The x-iapo-* headers a streamed answer repeats in its final summary event.
_SUMMARY = (
    "x-iapo-samples",
    "x-iapo-cost",
    "x-iapo-agreement",
    "x-iapo-score",
    "x-iapo-unranked",
)

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's code for "the client went away first"; only ever logged
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def until_disconnect(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it and raise ClientGone.

    ``work`` runs in this task (no task of its own: one hop less through a busy event
    loop on every request); a watcher cancels this task if the client goes away. If the
    server cancels the request itself (uvicorn does when the drain bound passes at
    shutdown), the client gets an honest 503 instead of the server's plain-text 500.
    """
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        try:
            message = await request.receive()
        except Exception:  # the server's receive failing is not a disconnect we can act on
            return
        if message.get("type") == "http.disconnect":
            # Only runs while this task is suspended, which is inside ``await work``.
            gone = True
            current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        current.uncancel()
        if gone:
            raise ClientGone("the client closed the request") from None
        raise ShuttingDown(
            "the proxy is shutting down and could not finish this request in time; retry it",
            retry_after=1,
        ) from None
    finally:
        watcher.cancel()


def on_disconnect(
    request: Request[Any, Any, Any], callback: Callable[[], None]
) -> asyncio.Task[None]:
    """Call ``callback`` once the client disconnects; cancel the returned watcher when done.

    A streaming response cannot rely on its generator's ``finally``: when the client
    goes away the server cancels the send, and the generator is left suspended at a
    ``yield`` until garbage collection. The watcher reacts to the disconnect itself.
    """

    async def watch() -> None:
        while (await request.receive()).get("type") != "http.disconnect":
            pass
        callback()

    return asyncio.ensure_future(watch())


def _raw_response(raw: RawResponse) -> Response[bytes]:
    headers = dict(raw.headers)
    media_type = headers.pop("content-type", "application/json")
    return Response(raw.body, status_code=raw.status, media_type=media_type, headers=headers)


class _Accounting:
    """In-flight gauge and request counting for one request, closed exactly once."""

    def __init__(self, service: ProxyService, task_label: str) -> None:
        self.service = service
        self.gauge = service.metrics.in_flight.labels(task_label)
        self.started = time.perf_counter()
        self.open = True
        service.enter()
        self.gauge.inc()

    def close(self, report: Callable[[float], None] | None = None) -> None:
        if self.open:
            self.open = False
            self.gauge.dec()
            self.service.leave()
            if report is not None:
                try:
                    report(time.perf_counter() - self.started)
                except Exception:  # accounting must never be what fails a request
                    logger.exception("could not account for a request")


class _UsageView(msgspec.Struct):
    usage: Usage | None = None


_usage_of = msgspec.json.Decoder(_UsageView).decode


def _passthrough_report(
    service: ProxyService, upstream: str, status: int, body: bytes | None = None
) -> Callable[[float], None]:
    """Metrics and a request-log row for a pass-through request (usage read if 2xx JSON)."""
    metrics = service.metrics

    def report(latency_s: float) -> None:
        metrics.requests.labels(PASSTHROUGH, "none", PASSTHROUGH, status_class(status)).inc()
        metrics.request_duration.labels(PASSTHROUGH, "none", PASSTHROUGH).observe(latency_s)
        usage = None
        if body is not None and status < 300:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                usage = _usage_of(body).usage
        prompt = usage.prompt_tokens if usage else 0
        completion = usage.completion_tokens if usage else 0
        cost = service.specs[upstream].cost(prompt, completion)
        if usage is not None:
            metrics.prompt_tokens.labels(PASSTHROUGH, "none").inc(prompt)
            metrics.completion_tokens.labels(PASSTHROUGH, "none").inc(completion)
            metrics.cost.labels(PASSTHROUGH, "none").inc(cost)
        if service.request_log is not None:
            ok = 200 <= status < 300
            service.request_log.record(
                RequestRecord(
                    ts=time.time(),
                    task=PASSTHROUGH,
                    strategy=PASSTHROUGH,
                    samples_launched=1,
                    samples_used=1 if ok else 0,
                    samples_failed=0 if ok or status == CLIENT_CLOSED else 1,
                    samples_cancelled=1 if status == CLIENT_CLOSED else 0,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost=cost,
                    latency_s=latency_s,
                    status=status,
                )
            )

    return report


async def _passthrough(
    service: ProxyService,
    request: Request[Any, Any, Any],
    raw: bytes,
    route: PassthroughRoute,
    deadline: float,
) -> Response[Any]:
    model, stream = route.model, route.stream
    upstream = service.passthrough_upstream(model)
    account = _Accounting(service, PASSTHROUGH)
    status, body = 500, None
    try:
        if not stream:
            response = await until_disconnect(request, upstream.forward(raw, deadline=deadline))
            status, body = response.status, response.body
            return _raw_response(response)
        opened = await until_disconnect(request, upstream.open_stream(raw, deadline=deadline))
        if isinstance(opened, RawResponse):
            status = opened.status
            return _raw_response(opened)
        status = opened.status
        return _stream_passthrough(service, request, upstream.name, opened, account)
    except ClientGone:
        status = CLIENT_CLOSED
        raise
    except ApiError as exc:
        status = exc.status_code
        raise
    finally:
        if not (stream and status < 300):
            account.close(_passthrough_report(service, upstream.name, status, body))


def _stream_passthrough(
    service: ProxyService,
    request: Request[Any, Any, Any],
    upstream: str,
    opened: UpstreamStream,
    account: _Accounting,
) -> Stream:
    headers = dict(opened.headers)
    media_type = headers.pop("content-type", "text/event-stream")
    closing: set[asyncio.Task[None]] = set()

    def gone() -> None:
        account.close(_passthrough_report(service, upstream, CLIENT_CLOSED))
        task = asyncio.ensure_future(opened.aclose())
        closing.add(task)
        task.add_done_callback(closing.discard)

    watcher = on_disconnect(request, gone)

    async def relay() -> AsyncIterator[bytes]:
        status = opened.status
        try:
            async for chunk in opened.chunks():
                yield chunk
        except ApiError as exc:
            status = exc.status_code
            yield b"\n\n" + error_event(exc)
        except BaseException:
            status = CLIENT_CLOSED
            raise
        finally:
            watcher.cancel()
            account.close(_passthrough_report(service, upstream, status))
            await opened.aclose()

    return Stream(relay(), status_code=opened.status, media_type=media_type, headers=headers)


def count_rejected(
    service: ProxyService, task: str | None, tier: str | None, error: ApiError
) -> None:
    """Count a request refused before it was routed (bad key, body, task or tier)."""
    metrics = service.metrics
    labels = (metrics.task(task), metrics.tier(tier), "none", status_class(error.status_code))
    metrics.requests.labels(*labels).inc()


async def handle_chat(service: ProxyService, request: Request[Any, Any, Any]) -> Response[Any]:
    """The whole chat completions endpoint: route, then serve the route."""
    headers = request.headers
    task_name, tier_name = headers.get("x-iapo-task"), headers.get("x-iapo-tier")
    try:
        iapo = read_headers(task_name, tier_name, headers.get("x-iapo-deadline-ms"))
        raw = await request.body()
        deadline_s = service.config.server.deadline_s
        if iapo.deadline_s is not None:
            deadline_s = min(deadline_s, iapo.deadline_s)
        deadline = asyncio.get_running_loop().time() + deadline_s
        found = find_task(service, iapo, raw)
        if isinstance(found, PassthroughRoute):
            route: Route = found
        else:
            task_name = found.name  # a request refused from here on counts under its task
            route = plan_task(service, found, raw, iapo.tier)
    except ApiError as exc:
        count_rejected(service, task_name, tier_name, exc)
        raise
    if isinstance(route, PassthroughRoute):
        return await _passthrough(service, request, raw, route, deadline)
    if route.view.stream:
        return _stream_task(service, request, route, deadline)
    return await _answer_task(service, request, route, deadline)


async def _answer_task(
    service: ProxyService, request: Request[Any, Any, Any], plan: TaskPlan, deadline: float
) -> Response[Any]:
    account = _Accounting(service, plan.served.name)
    spent = SamplingResult(samples=[])
    outcome: TaskOutcome | None = None
    try:
        aggregate = await until_disconnect(request, run_task(service, plan, deadline, spent))
        outcome = task_outcome(plan, spent, aggregate)
        return Response(
            outcome.body(),
            status_code=200,
            media_type="application/json",
            headers=outcome.headers(),
        )
    except ClientGone:
        outcome = task_outcome(plan, spent, status=CLIENT_CLOSED)
        raise
    except ApiError as exc:
        outcome = task_outcome(plan, spent, status=exc.status_code, error=exc)
        raise
    finally:
        final = outcome or task_outcome(plan, spent, status=500)
        account.close(lambda latency: account_task(service, final, latency))


def _stream_task(
    service: ProxyService,
    request: Request[Any, Any, Any],
    plan: TaskPlan,
    deadline: float,
) -> Stream:
    account = _Accounting(service, plan.served.name)
    summary_chunk = request.headers.get("x-iapo-stream-summary", "").lower() == "chunk"

    async def work() -> list[bytes]:
        spent = SamplingResult(samples=[])
        outcome: TaskOutcome | None = None
        try:
            aggregate = await run_task(service, plan, deadline, spent)
            outcome = answer = task_outcome(plan, spent, aggregate)
            summary = {
                k.removeprefix("x-iapo-"): v for k, v in answer.headers().items() if k in _SUMMARY
            }
            return answer_events(
                completion_id=answer.id,
                created=answer.created,
                model=answer.model,
                choices=answer.choices,
                usage=answer.usage if plan.view.include_usage else None,
                summary=summary,
                summary_chunk=summary_chunk,
            )
        except ApiError as exc:
            outcome = task_outcome(plan, spent, status=exc.status_code, error=exc)
            raise
        finally:
            # Not ended by an ApiError or an answer: cancelled, the client went away.
            final = outcome or task_outcome(plan, spent, status=CLIENT_CLOSED)
            account.close(lambda latency: account_task(service, final, latency))

    # Sampling starts now, not when the server first pulls from the stream.
    task = asyncio.ensure_future(work())

    def gone() -> None:
        task.cancel()

    watcher = on_disconnect(request, gone)
    return Stream(
        keepalive_then(task, service.config.server.keepalive_interval_s, watcher),
        status_code=200,
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **plan.start_headers()},
    )


def client_gone_response() -> Response[bytes]:
    """What a handler returns for a client that left (nobody reads it)."""
    return api_error_response(ClientGone("client closed the request"))
