"""The proxy's HTTP/1.1 server protocol: uvicorn's httptools protocol with bounds on what a
client may make it hold.

uvicorn reads a request head of any size (a 16 MB header line is buffered whole) and
waits forever for a head or body that drips in a byte at a time. Here:

- a request head larger than ``max_header_bytes`` is answered 431 in the OpenAI error
  shape and the connection closed, before more of it is buffered;
- a head not complete within ``header_timeout_s`` of the connection opening (or of its
  first byte, on a kept-alive connection) is answered 408 and closed;
- a body that stalls for ``body_timeout_s`` is closed (the handler sees a disconnect);
- at shutdown, a connection still receiving its request is closed at once, so one stuck
  upload never holds the drain for its whole bound.

    uvicorn.Config(app, http=guarded_protocol(config.server))
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from policies import ApiError, HeadersTooLarge, RequestTimeout
from proxy.config import ServerConfig

__all__ = ["GuardedHttpToolsProtocol", "guarded_protocol"]

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_LINGER_S = 1.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head-size, head-time and body-stall bounds."""

    max_header_bytes = ServerConfig.max_header_bytes
    header_timeout_s = ServerConfig.header_timeout_s
    body_timeout_s = ServerConfig.body_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # reading a request head (or waiting for the first byte)
        self._head_bytes = 0
        self._body_open = False
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

    # -- timers -------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._head_open:
            self._refuse(RequestTimeout("the request head did not arrive in time"))
        elif self._body_open:
            self.transport.close()  # the handler waiting for the body sees a disconnect

    def _refuse(self, error: ApiError) -> None:
        """Answer ``error`` in the OpenAI shape without involving the app; close."""
        self._refused = True
        body = msgspec.json.encode(error.to_body())
        head = [b"HTTP/1.1 %d %s\r\n" % (error.status_code, _REASONS[error.status_code])]
        for name, value in {**error.headers(), "content-type": "application/json"}.items():
            head.append(b"%s: %s\r\n" % (name.encode(), value.encode()))
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        # A lingering close: closing with the client's bytes unread would reset the
        # connection and could destroy the answer before the client reads it. Half-close,
        # discard what still comes (data_received), close for good a moment later.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._head_bytes += len(data)
        elif self._body_open:
            self._arm(self.body_timeout_s)  # a stall, not a slow upload, is the problem
        if self._refused:
            return
        super().data_received(data)
        if (
            (self._head_open or self._refused)
            and self._head_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(
                HeadersTooLarge(
                    f"request headers are larger than {self.max_header_bytes} bytes",
                )
            )

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0
        if self._timer is None:
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        if self._refused or self._head_bytes > self.max_header_bytes:
            self._refused = True  # answered 431 once the parser returns; no app call
            return
        self._head_open = False
        self._body_open = True
        self._arm(self.body_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_open = False
        self._disarm()
        if not self._refused:
            super().on_message_complete()

    def shutdown(self) -> None:
        if self._body_open:
            self.transport.close()  # nothing to drain: the request never fully arrived
            return
        super().shutdown()


def guarded_protocol(server: ServerConfig) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with ``server``'s bounds."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": server.max_header_bytes,
            "header_timeout_s": server.header_timeout_s,
            "body_timeout_s": server.body_timeout_s,
        },
    )
