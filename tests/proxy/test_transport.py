"""LeanTransport against a raw asyncio HTTP server on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from proxy.transport import LeanTransport, request_bytes, request_prefix

Reply = Callable[[bytes], bytes | None]  # request bytes -> response bytes (None: hang up)


@asynccontextmanager
async def raw_server(reply: Reply, *, delay_s: float = 0.0) -> AsyncIterator[tuple[str, list[int]]]:
    """A server answering each request on a connection with ``reply``; counts connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                await asyncio.sleep(delay_s)
                answer = reply(head + body)
                if answer is None:
                    writer.close()
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", connections


def ok(body: bytes = b'{"ok":true}') -> Reply:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return lambda request: head % len(body) + body


async def test_keep_alive_reuses_one_connection_and_sends_the_body() -> None:
    seen: list[bytes] = []

    def reply(request: bytes) -> bytes:
        seen.append(request)
        return ok()(request)  # type: ignore[return-value]

    async with (
        raw_server(reply) as (url, connections),
        httpx.AsyncClient(transport=LeanTransport()) as client,
    ):
        for i in range(3):
            response = await client.post(url + "/v1/x?q=1", content=b"body-%d" % i)
            assert response.status_code == 200
            assert response.json() == {"ok": True}
    assert len(connections) == 1
    assert seen[2].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
    assert seen[2].endswith(b"\r\n\r\nbody-2")
    assert b"content-length: 6" in seen[2].lower()


async def test_chunked_body_streams_in_pieces() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with (
        raw_server(lambda request: chunked) as (url, _),
        httpx.AsyncClient(transport=LeanTransport()) as client,
    ):
        async with client.stream("POST", url, content=b"{}") as response:
            parts = [part async for part in response.aiter_raw()]
        again = await client.post(url, content=b"{}")
    assert b"".join(parts) == b"hello world"
    assert again.text == "hello world"


async def test_connection_refused_is_a_connect_error() -> None:
    async with raw_server(ok()) as (url, _):
        pass  # the server is gone: its port refuses
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(url, content=b"{}")


async def test_hang_up_mid_response_is_a_protocol_error() -> None:
    truncated = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part"

    async with (
        raw_server(lambda request: truncated) as (url, _),
        httpx.AsyncClient(transport=LeanTransport()) as client,
    ):
        # the server writes a short body and waits; then the read timeout fires
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, content=b"{}", timeout=httpx.Timeout(5, read=0.2))
    async with (
        raw_server(lambda request: None) as (url, _),
        httpx.AsyncClient(transport=LeanTransport()) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(url, content=b"{}")


async def test_read_timeout() -> None:
    async with (
        raw_server(ok(), delay_s=0.5) as (url, _),
        httpx.AsyncClient(transport=LeanTransport()) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, content=b"{}", timeout=httpx.Timeout(5, read=0.05))


@pytest.mark.parametrize("budget", [1, 0])
async def test_stale_keep_alive_retry_asks_the_budget(budget: int) -> None:
    """A kept-alive connection the server closes on the next request without answering:
    one fresh connection is tried if the caller's budget allows it, else the error."""
    requests = 0

    def answer_first_on_each_connection(request: bytes) -> bytes | None:
        nonlocal requests
        requests += 1
        if requests == 2:
            return None  # read the request, close without a byte of answer
        return ok()(request)

    asked = 0

    def may_resend() -> bool:
        nonlocal asked
        asked += 1
        return asked <= budget

    transport = LeanTransport()
    async with raw_server(answer_first_on_each_connection) as (url, connections):
        target = httpx.URL(url + "/v1/chat/completions")
        data = request_bytes(request_prefix("POST", target, {}), b"{}")
        first = await transport.exchange(target, data, may_resend=may_resend)
        if budget:
            second = await transport.exchange(target, data, may_resend=may_resend)
            assert (first.status_code, second.status_code) == (200, 200)
        else:
            with pytest.raises(httpx.RemoteProtocolError):
                await transport.exchange(target, data, may_resend=may_resend)
        await transport.aclose()
    assert asked == 1  # the retry line ran, and asked once
    assert requests == (3 if budget else 2)
    assert len(connections) == (2 if budget else 1)


async def test_https_is_refused() -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.post("https://example.invalid/", content=b"{}")


async def test_exchange_reads_whole_replies_on_one_kept_alive_connection() -> None:
    seen: list[bytes] = []
    big = b"x" * (3 << 20)  # past the transport's pause-reading mark: must not stall

    def reply(request: bytes) -> bytes:
        seen.append(request)
        body = big if request.endswith(b"big") else b'{"ok":true}'
        return ok(body)(request)  # type: ignore[return-value]

    transport = LeanTransport()
    async with raw_server(reply) as (url, connections):
        target = httpx.URL(url + "/v1/chat/completions")
        prefix = request_prefix("POST", target, {"authorization": "Bearer k"})
        small = await transport.exchange(target, request_bytes(prefix, b"{}"))
        async with asyncio.timeout(10):
            large = await transport.exchange(target, request_bytes(prefix, b"big"))
        await transport.aclose()
    assert (small.status_code, small.content) == (200, b'{"ok":true}')
    assert small.headers["content-type"] == "application/json"
    assert large.content == big
    assert len(connections) == 1
    host = url.removeprefix("http://").encode()
    assert seen[0] == (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: " + host + b"\r\n"
        b"authorization: Bearer k\r\ncontent-length: 2\r\n\r\n{}"
    )


def test_request_prefix_refuses_header_injection_and_https() -> None:
    target = httpx.URL("http://up.test/v1")
    with pytest.raises(ValueError, match="line break"):
        request_prefix("POST", target, {"authorization": "Bearer k\r\nx-evil: 1"})
    with pytest.raises(httpx.UnsupportedProtocol):
        request_prefix("POST", httpx.URL("https://up.test/v1"), {})
