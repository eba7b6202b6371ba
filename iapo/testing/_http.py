"""Just enough HTTP/1.1 over asyncio streams to misbehave on purpose.

A real HTTP server library would refuse to send a truncated body, reset a connection
or stall half-way through a stream; this one does whatever it is told. It reads one
request at a time on a keep-alive connection and notices when the peer goes away
while we are (deliberately) slow to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass

__all__ = ["BadRequest", "Connection", "Request"]

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    411: "Length Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class BadRequest(Exception):
    """The peer sent something that is not an HTTP/1.1 request we can read."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes


class Connection:
    """One client connection: read requests, write (possibly broken) responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buffer = bytearray()
        self.peer_closed = False
        # >0: write responses in pieces of this many bytes, yielding between them, so
        # the client's parser sees heads and bodies split at every possible point.
        self.fragment = 0

    async def _fill(self) -> bool:
        try:
            data = await self._reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.peer_closed = True
            return False
        self._buffer += data
        return True

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not await self._fill():
                raise BadRequest("connection closed inside a request body")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD or not await self._fill():
                raise BadRequest("connection closed or line too long")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def read_request(self) -> Request | None:
        """The next request, or None when the peer closed the connection between requests."""
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise BadRequest("request head too large")
            if not await self._fill():
                if self._buffer:
                    raise BadRequest("connection closed inside a request head")
                return None
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        try:
            method, path, _version = request_line.split(" ", 2)
        except ValueError:
            raise BadRequest(f"bad request line {request_line!r}") from None
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest(f"bad header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise BadRequest("bad content-length") from None
            if not 0 <= length <= MAX_BODY:
                raise BadRequest("content-length out of range")
            body = await self._read_exactly(length)
        return Request(method.upper(), path, headers, body)

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self._read_line()
            try:
                size = int(size_line.split(b";", 1)[0], 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while await self._read_line():  # trailers, up to the empty line
                    pass
                return bytes(body)
            body += await self._read_exactly(size)
            await self._read_exactly(2)
            if len(body) > MAX_BODY:
                raise BadRequest("body too large")

    async def wait_peer_closed(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the peer closes the connection.

        Anything the peer sends meanwhile is kept for the next request.
        """
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.peer_closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._fill(), left)
            except TimeoutError:
                return False
        return True

    async def send(self, data: bytes) -> bool:
        """Write and drain; False if the peer is gone."""
        if self.peer_closed:
            return False
        step = self.fragment if self.fragment > 0 else len(data) or 1
        try:
            for start in range(0, len(data), step):
                self._writer.write(data[start : start + step])
                await self._writer.drain()
                if self.fragment > 0:
                    await asyncio.sleep(0)
        except (ConnectionError, OSError, RuntimeError):
            self.peer_closed = True
            return False
        return True

    @staticmethod
    def head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def respond(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        close_delimited: bool = False,
    ) -> bool:
        """A complete response with a Content-Length, or delimited by closing the connection
        (``close_delimited``: legal HTTP/1.1 that keep-alive clients rarely meet)."""
        all_headers = {"content-type": "application/json", **(headers or {})}
        if close_delimited:
            all_headers["connection"] = "close"
        else:
            all_headers["content-length"] = str(len(body))
        return await self.send(self.head(status, all_headers) + body)

    async def start_chunked(self, status: int, headers: dict[str, str]) -> bool:
        return await self.send(self.head(status, {**headers, "transfer-encoding": "chunked"}))

    async def send_chunk(self, data: bytes) -> bool:
        return await self.send(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunks(self) -> bool:
        return await self.send(b"0\r\n\r\n")

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), as a crashed or overloaded server does."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()
        self.peer_closed = True

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            await self._writer.wait_closed()
