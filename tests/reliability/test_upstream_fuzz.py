"""A bad upstream, property-based: hypothesis generates what the upstream answers (status,
headers, usage from negative to huge, JSON shapes, framing: exact, short or long
content-length, chunked and broken chunked, close-delimited, stray bytes, resets and
stalls at every point) and the real proxy, under uvicorn on a real socket, must hold:

- every client gets a well-formed answer within its deadline: a chat completion, an SSE
  stream that ends with ``[DONE]`` or an error event, an error in the OpenAI shape, or
  (pass-through only) exactly the status and bytes the upstream sent;
- the process stays up (``/healthz``);
- the request log has one row per request handled, none lost;
- no counter of ``/metrics`` ever goes backwards.

The proxy and the scripted upstream live on an event loop in a portal thread for the
whole module, once per upstream transport (lean, httpx); hypothesis drives them from the
test thread. ``IAPO_FUZZ_EXAMPLES`` scales the examples (default 60 per transport).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import socket
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.reliability.conftest import AUTH, TASK, eventually, make_config, uvicorn_proxy

EXAMPLES = int(os.environ.get("IAPO_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DEADLINE_MS = 2500
ANSWER_TIMEOUT_S = DEADLINE_MS / 1000 + 3.0  # the deadline, and time to write the answer


@dataclass(frozen=True)
class Behaviour:
    """What the upstream does with one call."""

    status: int
    body: bytes
    framing: str
    retry_after: str | None = None
    split: int = 0  # where a reset or a stall cuts the response, in bytes

    def delivered(self) -> bytes:
        """The body as its framing delivers it (a 204 has none; a short content-length
        cuts it, the rest being stray bytes)."""
        if self.status == 204:
            return b""
        if self.framing == "short_length":
            return self.body[: len(self.body) - min(len(self.body), 5)]
        return self.body


# -- strategies --------------------------------------------------------------------------

STATUSES = st.sampled_from(
    [200] * 8 + [201, 204, 101, 301, 302, 400, 401, 403, 404, 429, 500, 502, 503, 504, 600, 999]
)
TOKENS = st.one_of(
    st.integers(0, 1000),
    st.integers(-(2**70), 2**70),
    st.sampled_from([-1, 2**31, 2**53, 2**63, 2**64]),
    st.floats(allow_nan=False),
    st.none(),
    st.text(max_size=3),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def completions(draw: st.DrawFn) -> bytes:
    choices = [
        {
            "index": i,
            "message": draw(
                st.sampled_from(
                    [
                        {"role": "assistant", "content": "The answer is \\boxed{42}."},
                        {"role": "assistant", "content": None},
                        {"role": "assistant", "content": 7},
                        None,
                    ]
                )
            ),
            "finish_reason": draw(st.sampled_from(["stop", None, 3])),
        }
        for i in range(draw(st.integers(0, 3)))
    ]
    usage = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries({"prompt_tokens": TOKENS, "completion_tokens": TOKENS}),
            JSON,
        )
    )
    body: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


BODIES = st.one_of(
    completions(),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.just(b'{"error": {"message": "no", "type": "x"}}'),
)
FRAMINGS = st.sampled_from(
    ["length"] * 6
    + [
        "short_length",
        "long_length",
        "chunked",
        "bad_chunked",
        "close",
        "extra_bytes",
        "reset_before",
        "reset_mid",
        "stall",
    ]
)
RETRY_AFTER = st.one_of(
    st.none(),
    st.sampled_from(
        ["0", "inf", "1e999", "-1", "nan", "soon", "9" * 400, "Wed, 21 Oct 2015 07:28:00 GMT"]
    ),
)
BEHAVIOURS = st.builds(Behaviour, STATUSES, BODIES, FRAMINGS, RETRY_AFTER, st.integers(0, 200))
REQUESTS = st.sampled_from(["task", "task_stream", "passthrough", "passthrough_stream"])


# -- the scripted upstream ---------------------------------------------------------------


class RawUpstream:
    """An HTTP/1.1 server that answers each chat call with the next scripted behaviour
    (a healthy completion once the script is used up)."""

    HEALTHY = Behaviour(
        200,
        json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "\\boxed{42}"}}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            }
        ).encode(),
        "length",
    )

    def __init__(self) -> None:
        self.script: collections.deque[Behaviour] = collections.deque()
        self.sent: list[Behaviour] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                behaviour = self.script.popleft() if self.script else self.HEALTHY
                self.sent.append(behaviour)
                if not await self._answer(behaviour, reader, writer):
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _answer(
        self, b: Behaviour, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Send ``b``; False when the connection must close afterwards."""
        lines = [f"HTTP/1.1 {b.status} X", "content-type: application/json"]
        if b.retry_after is not None:
            lines.append(f"retry-after: {b.retry_after}")
        body = b.body
        if b.framing == "reset_before":
            _reset(writer)
            return False
        if b.framing in ("chunked", "bad_chunked"):
            lines.append("transfer-encoding: chunked")
            step = max(1, b.split % 17 or 1)
            chunks = [body[i : i + step] for i in range(0, len(body), step)]
            payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            payload += b"zz\r\n" if b.framing == "bad_chunked" else b"0\r\n\r\n"
        elif b.framing == "close":
            lines.append("connection: close")
            payload = body
        else:
            delta = {"short_length": -min(len(body), 5), "long_length": 7}.get(b.framing, 0)
            lines.append(f"content-length: {len(body) + delta}")
            payload = body
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        if b.framing == "extra_bytes":
            data += b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
        if b.framing in ("reset_mid", "stall"):
            writer.write(data[: min(len(data) - 1, b.split)])
            await writer.drain()
            if b.framing == "stall":
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):  # until the proxy gives up on it
                        await reader.read()
                writer.close()
            else:
                _reset(writer)
            return False
        writer.write(data)
        await writer.drain()
        return b.framing not in ("close", "long_length", "bad_chunked")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- the running proxy -------------------------------------------------------------------


class Harness:
    def __init__(
        self, portal: BlockingPortal, upstream: RawUpstream, url: str, tmp: Path, transport: str
    ):
        self.portal = portal
        self.transport = transport
        self.upstream = upstream
        self.url = url
        self.tmp = tmp
        self.handled = 0
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.client = httpx.AsyncClient(base_url=url, timeout=ANSWER_TIMEOUT_S)

    def call(self, kind: str, tier: str, script: list[Behaviour]) -> tuple[httpx.Response, bytes]:
        async def run() -> tuple[httpx.Response, bytes]:
            self.upstream.script.clear()
            self.upstream.script.extend(script)
            self.upstream.sent.clear()
            task = kind.startswith("task")
            headers = {**(TASK if task else AUTH), "x-iapo-deadline-ms": str(DEADLINE_MS)}
            if task:
                headers["x-iapo-tier"] = tier
            body = {
                "model": "fault-model",
                "messages": [{"role": "user", "content": "What is 6 times 7?"}],
                "stream": kind.endswith("stream"),
            }
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                async with self.client.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as response:
                    content = await response.aread()
            self.handled += 1
            return response, content

        return self.portal.call(run)

    def health_and_metrics(self) -> tuple[int, str]:
        async def run() -> tuple[int, str]:
            health = await self.client.get("/healthz")
            text = (await self.client.get("/metrics", headers=AUTH)).text
            return health.status_code, text

        return self.portal.call(run)


@pytest.fixture(scope="module", params=["lean", "httpx"])
def harness(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Harness]:
    """The proxy in front of the raw upstream, over each upstream transport in turn."""
    tmp: Path = tmp_path_factory.mktemp("upstream-fuzz")
    upstream = RawUpstream()
    with start_blocking_portal(backend="asyncio") as portal:
        base_url = portal.call(upstream.start)
        config = make_config(
            tmp,
            base_url,
            upstream={"timeout_s": 1, "max_retries": 1},
            extra={
                "breaker": {"failure_threshold": 1000},
                "server": {"upstream_transport": request.param},
            },
        )
        with portal.wrap_async_context_manager(uvicorn_proxy(config)) as (url, service):
            h = Harness(portal, upstream, url, tmp, request.param)
            h.service = service  # type: ignore[attr-defined]
            yield h
            portal.call(h.client.aclose)
        portal.call(upstream.stop)


# -- invariants --------------------------------------------------------------------------


def _is_openai_error(response: httpx.Response, content: bytes) -> bool:
    try:
        body = json.loads(content)
    except ValueError:
        return False
    if not isinstance(body, dict) or set(body) != {"error"}:
        return False
    error = body["error"]
    return (
        isinstance(error, dict)
        and set(error) == {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and bool(error["message"])
        and 400 <= response.status_code < 600
    )


def check_answer(kind: str, response: httpx.Response, content: bytes, sent: list[Behaviour]):
    status = response.status_code
    if kind.startswith("passthrough"):
        upstream_said = {(b.status, b.delivered()) for b in sent}
        if (status, content) in upstream_said:
            return  # byte-faithful pass-through of what the upstream answered
        if kind.endswith("stream") and 200 <= status < 300:
            # a stream relayed as it came; if it broke, an error event ends it
            assert any(content.startswith(b.body[:1]) for b in sent) or b"error" in content
            return
        assert response.headers.get("x-should-retry") in ("true", "false"), (status, content)
        assert _is_openai_error(response, content), (status, content[:300])
        return
    if kind == "task_stream":
        assert status == 200, (status, content[:300])
        text = content.decode()
        events = [e for e in text.split("\n\n") if e.startswith("data: ")]
        assert events, text
        last = events[-1]
        if last != "data: [DONE]":
            assert '"error"' in last, text[-300:]
            assert "[DONE]" not in text, text[-300:]
        return
    if status == 200:
        body = json.loads(content)
        assert body["object"] == "chat.completion"
        assert body["choices"], body
        usage = body["usage"]
        assert all(isinstance(v, int) and v >= 0 for v in usage.values()), usage
        return
    assert response.headers.get("x-should-retry") in ("true", "false"), (status, content)
    assert _is_openai_error(response, content), (status, content[:300])
    assert status != 500, content


def check_counters(harness: Harness, text: str) -> None:
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            key = (sample.name, tuple(sorted(sample.labels.items())))
            previous = harness.counters.get(key, 0.0)
            assert sample.value >= previous, (key, previous, sample.value)
            harness.counters[key] = sample.value


@FUZZ
@given(
    kind=REQUESTS,
    tier=st.sampled_from(["economy", "standard"]),
    script=st.lists(BEHAVIOURS, min_size=1, max_size=4),
)
def test_whatever_the_upstream_does_the_proxy_holds(
    harness: Harness, kind: str, tier: str, script: list[Behaviour]
) -> None:
    if harness.transport == "httpx":
        # Known holes of the httpx fallback, left out here (the lean transport, the
        # default, retires the connection or answers 502): httpcore keeps bytes that
        # follow a response (a short content-length, stray bytes) and h11 takes a 101 as
        # a protocol switch, and the next call on that connection reads them as its
        # response.
        assume(
            all(
                b.status != 101 and b.framing not in ("extra_bytes", "short_length") for b in script
            )
        )
    response, content = harness.call(kind, tier, script)
    event(f"{kind} -> {response.status_code}")  # --hypothesis-show-statistics
    check_answer(kind, response, content, list(harness.upstream.sent))
    health, metrics = harness.health_and_metrics()
    assert health == 200
    check_counters(harness, metrics)


def test_every_request_handled_has_its_log_row(harness: Harness) -> None:
    """Runs after the property (same module): rows written equal requests handled."""
    service = harness.service  # type: ignore[attr-defined]
    log = service.request_log

    async def flushed() -> bool:
        return await eventually(
            lambda: log.written + log.failed + log.dropped >= harness.handled, 10
        )

    assert harness.portal.call(flushed), "the request log never caught up"
    with sqlite3.connect(harness.tmp / "requests.sqlite") as db:
        rows = db.execute("SELECT COUNT(*) FROM request_log").fetchone()[0]
    assert harness.handled > 0
    assert (log.failed, log.dropped) == (0, 0)
    assert rows == harness.handled
