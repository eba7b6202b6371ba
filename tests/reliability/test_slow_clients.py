"""What a client may make the server hold (issue 15, defect 8): an oversized head is a 431
in the OpenAI shape, a head or body that drips in is cut off, and one stuck upload does not
hold the shutdown drain. Raw sockets against the proxy under uvicorn with the protocol
``iapo serve`` runs (``proxy.protocol``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx

from tests.reliability.conftest import (
    AUTH,
    TASK,
    chat,
    fault_upstream,
    make_config,
    uvicorn_proxy,
)

LIMITS = {"max_header_bytes": 8192, "header_timeout_s": 0.3, "body_timeout_s": 0.3}


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection (bounded: it must close)."""
    async with asyncio.timeout(5):
        return await reader.read(-1)


async def test_an_oversized_header_is_a_431_and_is_not_buffered(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url, extra={"server": LIMITS})
        async with uvicorn_proxy(config) as (url, _):
            reader, writer = await _connect(url)
            answered = asyncio.ensure_future(reader.read(65536))  # the first bytes back
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: ")
            sent = 0
            with contextlib.suppress(ConnectionError):
                while not answered.done() and sent < 16 << 20:  # one 16 MB header line
                    writer.write(b"a" * 65536)
                    await writer.drain()
                    sent += 65536
            async with asyncio.timeout(5):
                answer = await answered
            writer.close()
            async with httpx.AsyncClient(base_url=url) as client:
                after = await client.post("/v1/chat/completions", json=chat(), headers=TASK)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert sent < 16 << 20  # the server answered long before 16 MB
    assert after.status_code == 200


async def test_a_head_that_drips_in_is_a_408_and_closed(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url, extra={"server": LIMITS})
        async with uvicorn_proxy(config) as (url, _):
            idle_reader, idle_writer = await _connect(url)  # never sends a byte
            reader, writer = await _connect(url)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            await writer.drain()
            answer = await _read_all(reader)
            idle = await _read_all(idle_reader)
            writer.close()
            idle_writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert idle.startswith(b"HTTP/1.1 408 "), idle[:200]


async def test_a_stalled_body_is_closed_and_does_not_hold_the_drain(tmp_path: Path) -> None:
    limits = {**LIMITS, "body_timeout_s": 60.0}  # only the shutdown can free this one
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url, extra={"server": limits})
        stopped = asyncio.Event()
        async with uvicorn_proxy(config, timeout_graceful_shutdown=60) as (url, service):
            reader, writer = await _connect(url)
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                f"authorization: {AUTH['authorization']}\r\n"
                "content-type: application/json\r\ncontent-length: 100\r\n\r\n"
            )
            writer.write(head.encode() + b'{"model": ')
            await writer.drain()
            await asyncio.sleep(0)  # the head is in; the body never completes
            closing = asyncio.ensure_future(_read_all(reader))
            # leaving the block shuts the server down (drain bound 60 s)
        stopped.set()
        answer = await closing
        writer.close()
    # the server closed the stuck upload at shutdown instead of waiting 60 s for it
    # (``_read_all`` would have raised TimeoutError after 5 s)
    assert stopped.is_set()
    assert b"200 OK" not in answer
    assert service.in_flight == 0


async def test_a_body_that_stalls_is_cut_off(tmp_path: Path) -> None:
    async with fault_upstream() as upstream:
        config = make_config(tmp_path, upstream.base_url, extra={"server": LIMITS})
        async with uvicorn_proxy(config) as (url, _):
            reader, writer = await _connect(url)
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                f"authorization: {AUTH['authorization']}\r\n"
                "content-length: 100\r\n\r\n"
            )
            writer.write(head.encode() + b"{")
            await writer.drain()
            answer = await _read_all(reader)
            writer.close()
    assert b"200 OK" not in answer
