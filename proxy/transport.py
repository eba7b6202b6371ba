"""A lean httpx transport for plain-HTTP upstreams: HTTP/1.1 keep-alive, httptools parsing.

The proxy's CPU per request is mostly the upstream hop, and in httpx's default stack
(httpcore on anyio, h11 in pure Python) one call costs about 0.5 ms of CPU on the bench
machine and its pool degrades with hundreds of concurrent calls. This transport keeps
httpx as the client API (requests, responses, timeouts, the error types the upstream
seam maps) but does the I/O with an asyncio protocol, the C parser httptools and an
O(1) pool of idle connections per host. It serves ``http://`` only; TLS upstreams use
httpx's default transport.

    http = httpx.AsyncClient(transport=LeanTransport(max_connections=256))
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httptools
import httpx

__all__ = [
    "ConnectTimeout",
    "LeanTransport",
    "ReadTimeout",
    "Reply",
    "request_bytes",
    "request_prefix",
]

_HIGH_WATER = 1 << 20  # pause reading when a consumer falls this far behind


# Our own timeouts, subclasses of httpx's so an httpx client on this transport (and the
# upstream seam, which maps httpx's types) reads them as what they are.
class ConnectTimeout(httpx.ConnectTimeout):
    """No connection (a free slot of the pool, then TCP) within the connect timeout."""


class ReadTimeout(httpx.ReadTimeout):
    """The upstream's own timeout passed before its response was complete."""


class _Connection(asyncio.Protocol):
    """One TCP connection; parses the responses to the requests sent on it, one at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        # A request is on the wire and its response not complete: bytes are expected.
        self.expecting = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        loop = asyncio.get_running_loop()
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.head: asyncio.Future[None] = loop.create_future()
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self._keep_alive = False
        self.received = False
        self.error: Exception | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._paused = False
        self._parser_extra = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.expecting:
            # Bytes nobody asked for (after a complete response, or on an idle connection):
            # the framing is off, and whatever follows on this connection cannot be trusted.
            self.close()
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                self._fail(httpx.RemoteProtocolError(f"malformed response from upstream: {exc}"))
            self.close()
            return
        if self._parser_extra:
            # More came in the same read as the end of the response (a wrong
            # content-length, a second response): the response stands, the connection goes.
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        framed = any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers
        )
        if self.head.done() and not framed:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
            return
        self._fail(httpx.RemoteProtocolError("upstream closed the connection mid-response"))

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self.expecting:
            self._parser_extra = True  # a second message in one read: framing surprise

    # Past a surprise message nothing is recorded: the response it follows stands as is.

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._parser_extra:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._parser_extra:
            return
        self.status = int(self._parser.get_status_code())
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._parser_extra:
            return
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._parser_extra:
            return
        # Read keep-alive now: the parser's answer is only meaningful inside the callback.
        self._keep_alive = bool(self._parser.should_keep_alive())
        self.complete = True
        self.expecting = False
        self._wake()

    # -- used by the transport ----------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # mark retrieved: the caller may be gone already
        self._wake()

    def send(self, data: bytes) -> None:
        self._reset()
        if self.closed or self.transport is None or self.transport.is_closing():
            raise httpx.RemoteProtocolError("upstream closed the kept-alive connection")
        self.expecting = True
        self.transport.write(data)

    @property
    def keep_alive(self) -> bool:
        return self._keep_alive and not self.closed and not self._parser_extra

    async def next_chunk(self) -> bytes | None:
        """The next body chunk, or None at the end of the body."""
        while True:
            if self.body:
                chunk = self.body.popleft()
                self.buffered -= len(chunk)
                if self._paused and self.buffered < _HIGH_WATER // 2 and self.transport:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    """The response body; the connection goes back to the pool once it is fully read."""

    def __init__(self, pool: _Pool, conn: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._timeout = read_timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while True:
                try:
                    async with asyncio.timeout(self._timeout):
                        chunk = await conn.next_chunk()
                except TimeoutError:
                    raise ReadTimeout("upstream stalled while sending the body") from None
                if chunk is None:
                    break
                yield chunk
        except BaseException:
            await self.aclose()
            raise
        await self._release(reusable=True)

    async def _release(self, *, reusable: bool) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._conn, reusable=reusable and self._conn.keep_alive)

    async def aclose(self) -> None:
        # A body not read to its end leaves the connection mid-response: close it.
        await self._release(reusable=self._conn.complete)


class _Pool:
    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(max_connections)

    async def acquire(self, connect_timeout: float | None) -> _Connection:
        """A connection: an idle one, else a new one; the wait for a free slot and the
        TCP connect together are bounded by ``connect_timeout``."""
        try:
            async with asyncio.timeout(connect_timeout):
                await self.slots.acquire()
        except TimeoutError:
            raise ConnectTimeout(
                f"no free connection to {self.host}:{self.port} within {connect_timeout} s"
            ) from None
        try:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    conn.reused = True
                    return conn
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(connect_timeout):
                    _, conn = await loop.create_connection(_Connection, self.host, self.port)
            except TimeoutError:
                raise ConnectTimeout(f"connect to {self.host}:{self.port} timed out") from None
            except OSError as exc:
                raise httpx.ConnectError(f"connect to {self.host}:{self.port}: {exc}") from None
            return conn
        except BaseException:
            self.slots.release()
            raise

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable and not conn.closed:
            self.idle.append(conn)
        else:
            conn.close()
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Reply:
    """A whole response read by :meth:`LeanTransport.exchange` (no httpx objects built).

    Quacks like the parts of ``httpx.Response`` the upstream seam reads: ``status_code``,
    ``content``, ``text``, ``headers`` (built on first use: only error paths look).
    """

    __slots__ = ("_headers", "content", "raw_headers", "status_code")

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.content = content
        self._headers: httpx.Headers | None = None

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self.raw_headers)
        return self._headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    async def aread(self) -> bytes:
        return self.content

    async def aclose(self) -> None:
        return None


def request_prefix(method: str, url: httpx.URL, headers: Mapping[str, str]) -> bytes:
    """A request's bytes up to the value of ``content-length`` (the caller adds the rest).

    Built once per target and reused for every call. Header names and values must be
    single-line latin-1: a CR or LF would let a value inject headers.
    """
    if url.scheme != "http":
        raise httpx.UnsupportedProtocol(f"LeanTransport serves http:// only, not {url}")
    lines = [method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\nhost: ", url.netloc, b"\r\n"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "transfer-encoding"):
            continue
        if any(c in name or c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} contains a line break or NUL")
        lines += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
    lines.append(b"content-length: ")
    return b"".join(lines)


def request_bytes(prefix: bytes, body: bytes) -> bytes:
    """The whole request: :func:`request_prefix`'s bytes, the body's length, the body."""
    return b"%s%d\r\n\r\n%s" % (prefix, len(body), body)


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over TCP with keep-alive; at most ``max_connections`` per host.

    Two ways in: as an httpx transport (``handle_async_request``: streams, any request),
    and :meth:`exchange`, the upstream seam's path for whole JSON calls, which skips
    building httpx requests and responses (about a third of the CPU of a fanned-out call).
    """

    def __init__(self, *, max_connections: int = 256) -> None:
        self.max_connections = max_connections
        self._pools: dict[tuple[str, int], _Pool] = {}

    def _pool(self, url: httpx.URL) -> _Pool:
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"LeanTransport serves http:// only, not {url}")
        key = (url.host, url.port or 80)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(key[0], key[1], self.max_connections)
        return pool

    async def _open(
        self,
        pool: _Pool,
        data: bytes,
        connect: float | None,
        read: float | None,
        may_resend: Callable[[], bool] | None = None,
    ) -> _Connection:
        """Send ``data`` on a pooled connection; return it once the response head is in.

        A kept-alive connection that closes before answering anything is most likely one
        the server had just timed out, but it may have read the request: one fresh
        connection is tried if ``may_resend()`` allows it (the caller's retry budget).
        """
        for attempt in (1, 2):
            conn = await pool.acquire(connect)
            try:
                conn.send(data)
                if read is None:
                    await conn.head
                else:
                    try:
                        async with asyncio.timeout(read):
                            await conn.head
                    except TimeoutError:
                        raise ReadTimeout("upstream did not answer in time") from None
            except httpx.RemoteProtocolError:
                pool.release(conn, reusable=False)
                stale = attempt == 1 and conn.reused and not conn.received
                if stale and (may_resend is None or may_resend()):
                    continue
                raise
            except BaseException:
                pool.release(conn, reusable=False)
                raise
            return conn
        raise AssertionError("unreachable")

    async def exchange(
        self,
        url: httpx.URL,
        data: bytes,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        may_resend: Callable[[], bool] | None = None,
    ) -> Reply:
        """Send a whole request (:func:`request_bytes`) to ``url``'s host; read the whole reply.

        ``read_timeout`` bounds the call once connected (:class:`ReadTimeout`); ``may_resend``
        decides whether a stale kept-alive connection may be retried on a fresh one.
        Raises httpx's transport errors (or their subclasses here), like the httpx path.
        """
        pool = self._pool(url)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(read_timeout):
                conn = await self._open(pool, data, connect_timeout, None, may_resend)
                chunks = []
                while (chunk := await conn.next_chunk()) is not None:
                    chunks.append(chunk)
        except BaseException as exc:
            if conn is not None:
                pool.release(conn, reusable=False)
            if isinstance(exc, TimeoutError):
                raise ReadTimeout("upstream did not answer in time") from None
            raise
        reply = Reply(conn.status, conn.headers, b"".join(chunks))
        pool.release(conn, reusable=conn.keep_alive)
        return reply

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        pool = self._pool(request.url)
        body = await request.aread()
        data = request_bytes(request_prefix(request.method, request.url, request.headers), body)
        conn = await self._open(pool, data, timeouts.get("connect"), timeouts.get("read"))
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(pool, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
