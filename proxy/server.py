"""Running the proxy under uvicorn, in the foreground or on a background thread.

uvicorn because it is the ASGI server litestar documents first, it has the graceful
shutdown iapo needs (stop accepting, drain with a bound, then the lifespan's
shutdown flushes the request log), and with ``uvloop`` and ``httptools`` installed
(``auto``) its per-request CPU cost is low enough for a proxy on the hot path.

    serve(config)                                   # ``iapo serve``: blocks until SIGTERM
    with ServerThread(create_app(config)) as url:   # tests and ``iapo demo``
        httpx.get(f"{url}/healthz")
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from proxy.app import create_app
from proxy.config import ProxyConfig, ServerConfig
from proxy.protocol import guarded_protocol

__all__ = ["ServerThread", "listen_socket", "serve", "uvicorn_config"]

logger = logging.getLogger(__name__)


def uvicorn_config(app: Any, config: ProxyConfig, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings iapo runs with (no reload, no access log unless asked)."""
    settings: dict[str, Any] = {
        "host": config.server.host,
        "port": config.server.port,
        "lifespan": "on",
        "loop": "auto",
        # httptools with bounds on header size and slow clients (proxy.protocol)
        "http": guarded_protocol(config.server),
        "access_log": config.server.access_log,
        "log_config": None,
        # uvicorn annotates an int but waits with asyncio: a float bound works as given.
        "timeout_graceful_shutdown": config.server.drain_timeout_s,
        "timeout_keep_alive": 75,
        "backlog": 2048,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, before anything else starts: OSError (errno
    EADDRINUSE for a port in use) is the caller's to report in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(config: ProxyConfig, sock: socket.socket | None = None) -> None:
    """Serve until SIGINT/SIGTERM; then drain, flush and close (bounded by drain_timeout_s).

    ``sock``: a socket from ``listen_socket`` (else uvicorn binds host and port itself).
    """
    server = uvicorn.Server(uvicorn_config(create_app(config), config))
    # Everything imported and built so far lives as long as the process. Frozen, the
    # cyclic GC no longer walks it on every full collection: a full collection went
    # from ~20 ms (every live request stalled behind it, the bench's p99) to ~2 ms.
    gc.collect()
    gc.freeze()
    server.run(sockets=None if sock is None else [sock])
    if not server.started:
        raise SystemExit(1)


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a background thread.

    Entering starts it and returns its base URL (``http://127.0.0.1:PORT``); leaving
    shuts it down gracefully, running the app's lifespan shutdown.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", **uvicorn_settings: Any) -> None:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
        # listening socket names its protocol; without it keep-alive replies wait ~40 ms for
        # the client's delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        settings: dict[str, Any] = {
            "lifespan": "on",
            "log_config": None,
            "access_log": False,
            "timeout_graceful_shutdown": 5,
            "http": guarded_protocol(ServerConfig()),
        }
        settings.update(uvicorn_settings)
        self.server = uvicorn.Server(uvicorn.Config(app, **settings))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported to the starting thread
            self.error = exc

    def start(self, timeout_s: float = 10.0) -> str:
        self._thread.start()
        waited = time.monotonic() + timeout_s
        while not self.server.started:
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError(f"server failed to start: {self.error!r}")
            if time.monotonic() > waited:
                raise RuntimeError("server did not start in time")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
