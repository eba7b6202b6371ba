"""Reproductions at the unit level (issue 15): the deadline header, sampling cancelled after
its calls finished, the request log's row-by-row fallback, stray bytes on a kept-alive
upstream connection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from policies import InvalidRequest, StopRule, UpstreamError
from proxy.config import RequestLogConfig, RetryConfig
from proxy.metrics import ProxyMetrics
from proxy.request import read_headers
from proxy.requestlog import RequestLog, RequestRecord
from proxy.sampling import SamplingResult, draw_samples
from proxy.transport import ConnectTimeout, LeanTransport, request_bytes, request_prefix
from proxy.wire import Completion, CompletionChoice
from tests.proxy.scripted import mock_client
from tests.proxy.test_transport import raw_server


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1500", 1.5), ("9" * 400, 1e6), ("0001", 0.001), (" 20 ", 0.02)],
)
def test_deadline_header_lowers_the_deadline_and_never_overflows(
    value: str, seconds: float
) -> None:
    assert read_headers(None, None, value).deadline_s == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["0", "-1", "+5", "1e3", "1_000", "", "٣"])
def test_deadline_header_must_be_a_positive_integer(value: str) -> None:
    with pytest.raises(InvalidRequest, match="X-IAPO-Deadline-Ms"):
        read_headers(None, None, value)


class _GatedClient:
    """An upstream client whose calls all answer once ``gate`` is set."""

    name = "gated"
    retry = RetryConfig()

    def __init__(self, calls: int) -> None:
        self.gate = asyncio.Event()
        self.all_called = asyncio.Event()
        self.calls = 0
        self.expected = calls

    async def chat(self, body: bytes, *, deadline: float, budget: Any = None) -> Completion:
        self.calls += 1
        if self.calls == self.expected:
            self.all_called.set()
        await self.gate.wait()
        choice = CompletionChoice(message={"role": "assistant", "content": "12"})
        return Completion(choices=[choice])


async def test_cancelled_after_every_call_finished_is_a_clean_cancel() -> None:
    client = _GatedClient(2)
    result = SamplingResult(samples=[])
    deadline = asyncio.get_running_loop().time() + 10
    drawing = asyncio.ensure_future(
        draw_samples(
            client,  # type: ignore[arg-type]
            {"messages": []},
            n=2,
            supports_n=False,
            extractor=None,
            stop=StopRule(kind="full"),
            deadline=deadline,
            result=result,
        )
    )
    await client.all_called.wait()
    # Both calls finish in the loop turn in which the request is cancelled (a client that
    # went away, a shutdown): the calls are done before the sampler wakes up.
    client.gate.set()
    drawing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drawing
    assert len(result.samples) + result.failed + result.cancelled == result.launched == 2
    assert len(result.samples) == 2


def _record(prompt_tokens: int) -> RequestRecord:
    return RequestRecord(ts=1.0, task="math", prompt_tokens=prompt_tokens, status=200)


async def test_one_bad_row_does_not_take_its_batch_with_it(tmp_path: Path) -> None:
    metrics = ProxyMetrics()
    path = tmp_path / "requests.sqlite"
    config = RequestLogConfig(path=str(path), flush_interval_s=0.01)
    log = await RequestLog.open(config, metrics)
    for tokens in (1, 2, 2**63, 3, 4):  # 2**63 does not fit SQLite's INTEGER
        log.record(_record(tokens))
    await log.close()
    with sqlite3.connect(path) as db:
        stored = [row[0] for row in db.execute("SELECT prompt_tokens FROM request_log")]
    assert sorted(stored) == [1, 2, 3, 4]
    assert (log.written, log.failed) == (4, 1)
    lost = metrics.request_log_lost.labels("failed")._value.get()
    assert lost == 1


@pytest.mark.parametrize("same_read", [True, False], ids=["same-read", "later"])
async def test_stray_bytes_after_a_response_retire_the_connection(same_read: bool) -> None:
    body = b'{"ok":true}'
    answer = b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    # a whole second head (its status and headers must not leak into the first answer)
    stray = b"HTTP/1.1 299 Stray\r\nx-stray: 1\r\ncontent-length: 100\r\n\r\nab"
    served = 0

    def reply(request: bytes) -> bytes:
        nonlocal served
        served += 1
        return answer + stray if served == 1 and same_read else answer

    transport = LeanTransport()
    async with raw_server(reply) as (url, connections):
        target = httpx.URL(url + "/v1/chat/completions")
        data = request_bytes(request_prefix("POST", target, {}), b"{}")
        async with asyncio.timeout(5):
            first = await transport.exchange(target, data)
            if not same_read:
                # the stray bytes arrive while the connection sits idle in the pool
                pool = next(iter(transport._pools.values()))
                assert pool.idle, "the first connection should be pooled"
                pool.idle[0].data_received(stray)
            second = await transport.exchange(target, data)
        await transport.aclose()
    assert (first.status_code, first.content) == (201, body)
    assert "x-stray" not in first.headers
    assert (second.status_code, second.content) == (201, body)
    assert len(connections) == 2


def test_usage_out_of_range_is_refused_where_it_enters() -> None:
    decode = msgspec.json.Decoder(Completion).decode
    for usage in (b'{"prompt_tokens": -10}', b'{"completion_tokens": 9223372036854775808}'):
        with pytest.raises(msgspec.ValidationError, match="usage"):
            decode(b'{"choices": [{}], "usage": ' + usage + b"}")


async def test_the_wait_for_a_connection_is_bounded_by_the_connect_timeout() -> None:
    """An upstream that holds every pooled connection (an overflowing listen queue, a
    hung server): a further call fails at the connect timeout, not at its deadline."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = LeanTransport(max_connections=1)
    target = httpx.URL(f"http://127.0.0.1:{port}/v1/chat/completions")
    data = request_bytes(request_prefix("POST", target, {}), b"{}")
    async with server:
        stuck = asyncio.ensure_future(transport.exchange(target, data, connect_timeout=5))
        await asyncio.sleep(0)  # the first call takes the only connection
        async with asyncio.timeout(5):
            with pytest.raises(ConnectTimeout, match="no free connection"):
                await transport.exchange(target, data, connect_timeout=0.05)
        release.set()
        with pytest.raises(httpx.RemoteProtocolError):
            await stuck
        await transport.aclose()


@pytest.mark.parametrize("status", [101, 302, 401])
async def test_a_stream_the_client_must_not_see_is_a_502(status: int) -> None:
    """Found by the upstream fuzz suite: a 101 opened a pass-through stream."""
    client = mock_client(lambda request: httpx.Response(status, content=b"{}"))
    with pytest.raises(UpstreamError) as error:
        await client.open_stream(b"{}", deadline=asyncio.get_running_loop().time() + 5)
    assert error.value.status_code == 502
    assert "'up'" in error.value.message
