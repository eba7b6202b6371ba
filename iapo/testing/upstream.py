"""A fault-injecting OpenAI-compatible upstream on a loopback socket.

It answers ``POST /v1/chat/completions`` (JSON and SSE streaming, ``n`` choices, usage),
``GET /v1/models`` and ``POST .../reward`` (the iapo reward v1 contract, for Best-of-N),
and misbehaves as its :class:`FaultPlan` says: latency spikes, hangs, 429 with
``retry-after``, 500/502/503, TCP resets, malformed JSON, truncated and stalled streams,
ignoring ``n`` or returning fewer choices. It counts what it received
and served, so a test can assert retries and cancellations::

    async with FaultUpstream(FaultPlan(script=("503", "ok"))) as upstream:
        ...  # point the proxy at upstream.base_url
        assert upstream.stats.chat_requests == 2
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from iapo.testing._http import BadRequest, Connection, Request
from iapo.testing._openai import (
    completion_body,
    error_body,
    message_texts,
    reward_body,
    sample_text,
    stream_events,
    token_count,
)
from iapo.testing.plan import (
    FaultKind,
    FaultPlan,
    UnknownFault,
    fault_from_marker,
    parse_fault,
    pick_fault,
    request_tag,
)

__all__ = ["FaultStats", "FaultUpstream", "ReceivedRequest"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One chat request as the upstream saw it, and what it did with it.

    ``tag`` is the ``[[tag:ID]]`` marker of its messages, if any (traces a client request
    through the proxy to every upstream call it caused).
    """

    index: int
    headers: dict[str, str]
    body: dict[str, Any]
    fault: FaultKind
    n: int
    choices: int
    stream: bool = False
    tag: str | None = None


@dataclass(slots=True)
class FaultStats:
    """Live counters of a :class:`FaultUpstream`.

    ``disconnected``: requests whose client closed the connection before the response
    was complete (cancelled calls). ``completed``: responses sent in full.
    ``choices_served``: choices in responses sent in full (what a client could bill).
    """

    connections: int = 0
    requests: int = 0
    chat_requests: int = 0
    reward_requests: int = 0
    bad_requests: int = 0
    completed: int = 0
    disconnected: int = 0
    choices_served: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    faults: Counter[str] = field(default_factory=Counter)


class FaultUpstream:
    """The server; an async context manager. ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        rng: np.random.Generator | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fault-model",
        keep: int = 10_000,
        observer: Callable[[ReceivedRequest], None] | None = None,
    ) -> None:
        self._plan = plan or FaultPlan()
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._host = host
        self._port = port
        self.model = model
        self.stats = FaultStats()
        self.received: collections.deque[ReceivedRequest] = collections.deque(maxlen=keep)
        self._observer = observer
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._script_index = 0
        self._served_ids = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        """Swap the plan; its script starts from its first entry."""
        self._plan = plan
        self._script_index = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FaultUpstream is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_idle(self) -> None:
        """Return once no chat request is being handled (wrap in ``asyncio.timeout``)."""
        await self._idle.wait()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats.connections += 1
        conn = Connection(reader, writer)
        try:
            while True:
                try:
                    request = await conn.read_request()
                except BadRequest as exc:
                    self.stats.bad_requests += 1
                    await conn.respond(400, error_body(400, str(exc)), {"connection": "close"})
                    break
                if request is None:
                    break
                self.stats.requests += 1
                if not await self._dispatch(conn, request):
                    break
        except asyncio.CancelledError:
            pass
        except Exception:  # a test tool must never take the test process down
            logger.exception("fault upstream: handler failed")
        finally:
            self._handlers.discard(task)
            await conn.close()

    async def _dispatch(self, conn: Connection, request: Request) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        path = request.path.split("?", 1)[0].rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            body = {"object": "list", "data": [{"id": self.model, "object": "model"}]}
            return await conn.respond(200, msgspec.json.encode(body))
        if request.method == "POST" and path.endswith("/chat/completions"):
            self.stats.in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
            self._idle.clear()
            try:
                return await self._chat(conn, request)
            finally:
                self.stats.in_flight -= 1
                if self.stats.in_flight == 0:
                    self._idle.set()
        if request.method == "POST" and path.endswith("/reward"):
            return await self._reward(conn, request)
        return await conn.respond(404, error_body(404, f"no route {request.method} {path}"))

    def _choose_fault(self, request: Request, texts: list[str]) -> FaultKind:
        """The fault the request names (UnknownFault if no such kind), else the plan's."""
        named = request.headers.get("x-fault")
        if named is not None:
            return parse_fault(named)
        marked = fault_from_marker(texts)
        if marked is not None:
            return marked
        index = self._script_index
        self._script_index += 1
        return pick_fault(self._plan, self._rng, index)

    def _answers(self, count: int) -> list[str]:
        plan = self._plan
        weights = None
        if plan.answer_weights is not None:
            total = sum(plan.answer_weights)
            weights = [w / total for w in plan.answer_weights]
        picks = self._rng.choice(len(plan.answers), size=count, p=weights)
        return [sample_text(plan.answers[int(i)], plan.pad_bytes) for i in picks]

    async def _chat(self, conn: Connection, request: Request) -> bool:
        self.stats.chat_requests += 1
        conn.fragment = self._plan.fragment_bytes
        try:
            body = msgspec.json.decode(request.body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            body = None  # a real upstream answers 400 to bytes it cannot read
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self.stats.bad_requests += 1
            return await conn.respond(400, error_body(400, "body must be a JSON chat request"))
        raw_n = body.get("n", 1)
        # bool is an int in Python: ``"n": true`` must not become one choice of ``True``
        valid = isinstance(raw_n, int) and not isinstance(raw_n, bool) and 1 <= raw_n <= 128
        n = raw_n if valid else 1
        plan = self._plan
        choices = 1 if plan.ignore_n else (math.ceil(n / 2) if plan.fewer_choices and n > 1 else n)
        texts = message_texts(body["messages"])
        try:
            fault = self._choose_fault(request, texts)
        except UnknownFault as exc:
            self.stats.bad_requests += 1
            return await conn.respond(400, error_body(400, str(exc)))
        self.stats.faults[fault] += 1
        received = ReceivedRequest(
            self.stats.chat_requests - 1,
            request.headers,
            body,
            fault,
            n,
            choices,
            stream=body.get("stream") is True,
            tag=request_tag(texts),
        )
        self.received.append(received)
        if self._observer is not None:
            self._observer(received)

        ended = await self._prelude(conn, fault)
        if ended is not None:
            return ended

        self._served_ids += 1
        request_id = f"chatcmpl-fault-{self._served_ids}"
        requested_model = body.get("model")
        model = requested_model if isinstance(requested_model, str) else self.model
        answers = self._answers(choices)
        prompt_tokens = sum(token_count(t) for t in texts)
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            events = stream_events(request_id, model, answers, prompt_tokens, include_usage)
            return await self._stream(conn, fault, events, choices)
        completion = completion_body(request_id, model, answers, prompt_tokens)
        if fault in ("usage_negative", "usage_huge"):
            completion["usage"]["prompt_tokens"] = -10 if fault == "usage_negative" else 2**63
        full = msgspec.json.encode(completion)
        return await self._send_json(conn, fault, full, choices)

    async def _reward(self, conn: Connection, request: Request) -> bool:
        """The iapo reward v1 contract (``policies.reward``), under the same fault plan:
        reward calls draw their faults from the same script and mix as chat calls."""
        self.stats.reward_requests += 1
        try:
            body = msgspec.json.decode(request.body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            body = None
        candidates = body.get("candidates") if isinstance(body, dict) else None
        objectives = body.get("objectives") if isinstance(body, dict) else None
        if not isinstance(candidates, list) or not isinstance(objectives, list):
            self.stats.bad_requests += 1
            return await conn.respond(400, error_body(400, "body must be a reward request"))
        assert isinstance(body, dict)
        try:
            fault = self._choose_fault(request, message_texts(body.get("messages")))
        except UnknownFault as exc:
            self.stats.bad_requests += 1
            return await conn.respond(400, error_body(400, str(exc)))
        self.stats.faults[fault] += 1
        ended = await self._prelude(conn, fault)
        if ended is not None:
            return ended
        texts = [c if isinstance(c, str) else "" for c in candidates]
        answer = reward_body(texts, [str(o) for o in objectives], self._plan.answers[0])
        return await self._send_json(conn, fault, msgspec.json.encode(answer), 0)

    async def _prelude(self, conn: Connection, fault: FaultKind) -> bool | None:
        """Latency, then the faults that need no answer body; None: go on and answer."""
        plan = self._plan
        delay = plan.latency_ms + float(self._rng.uniform(0, plan.jitter_ms))
        if fault == "spike":
            delay += plan.spike_ms
        if delay > 0 and await conn.wait_peer_closed(delay / 1000):
            self.stats.disconnected += 1
            return False
        if fault == "hang":
            await conn.wait_peer_closed(plan.hang_s)
            self.stats.disconnected += 1
            return False
        if fault.isdigit() or fault == "retry_inf":
            status = 429 if fault == "retry_inf" else int(fault)
            headers = {"retry-after": f"{plan.retry_after_s:g}"} if status == 429 else {}
            if fault == "retry_inf":
                headers["retry-after"] = "inf"
            body = error_body(status, f"injected {fault}") if status != 302 else b""
            sent = await conn.respond(status, body, headers)
            self._count_end(sent, 0)
            return sent
        if fault == "reset":
            conn.reset()
            return False
        return None

    async def _send_json(
        self, conn: Connection, fault: FaultKind, full: bytes, choices: int
    ) -> bool:
        """A 200 JSON answer, malformed, truncated or stalled as ``fault`` says."""
        plan = self._plan
        if fault == "malformed":
            sent = await conn.respond(200, full[: len(full) // 2] + b"}}not json")
            self._count_end(sent, 0)
            return sent
        if fault in ("truncate", "stall"):
            head = conn.head(
                200, {"content-type": "application/json", "content-length": str(len(full))}
            )
            await conn.send(head + full[: len(full) // 2])
            if fault == "stall":
                await conn.wait_peer_closed(plan.hang_s)
            self.stats.disconnected += 1 if conn.peer_closed else 0
            return False
        if fault == "extra_bytes":
            # In the same write, the head of a second response nobody asked for, promising
            # a body that never comes, on a connection kept alive.
            head = conn.head(
                200, {"content-type": "application/json", "content-length": str(len(full))}
            )
            stray = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
            sent = await conn.send(head + full + stray)
        else:
            sent = await conn.respond(200, full, close_delimited=plan.close_delimited)
        self._count_end(sent, choices)
        return sent and not plan.close_delimited

    async def _stream(
        self, conn: Connection, fault: FaultKind, events: list[bytes], choices: int
    ) -> bool:
        plan = self._plan
        if not await conn.start_chunked(
            200, {"content-type": "text/event-stream", "cache-control": "no-cache"}
        ):
            self._count_end(False, 0)
            return False
        cut = max(1, len(events) // 2) if fault in ("truncate", "stall", "malformed") else None
        for i, event in enumerate(events):
            if cut is not None and i == cut:
                if fault == "malformed":
                    await conn.send_chunk(b"data: {this is not json\n\n")
                    continue
                if fault == "stall":
                    await conn.wait_peer_closed(plan.hang_s)
                self.stats.disconnected += 1 if conn.peer_closed else 0
                return False  # truncate: close without the last chunk
            if plan.chunk_delay_ms and await conn.wait_peer_closed(plan.chunk_delay_ms / 1000):
                self.stats.disconnected += 1
                return False
            if not await conn.send_chunk(event):
                self._count_end(False, 0)
                return False
        sent = await conn.end_chunks()
        self._count_end(sent, choices if fault != "malformed" else 0)
        return sent

    def _count_end(self, sent: bool, choices: int) -> None:
        if sent:
            self.stats.completed += 1
            self.stats.choices_served += choices
        else:
            self.stats.disconnected += 1
