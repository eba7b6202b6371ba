"""Run an ASGI app with uvicorn inside the current event loop, on a free loopback port.

    async with serve_in_background(app) as base_url:   # "http://127.0.0.1:41235"
        ...

Used by the demo (simulator and proxy side by side in one process) and by the tests.
Signals are left to the caller: the in-process server installs no handlers, so Ctrl+C
reaches the demo, which then shuts its servers down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn

from policies.errors import ConfigError

__all__ = ["serve_in_background"]

logger = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve_in_background(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 10.0
) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits; yields its base URL (no trailing slash)."""
    # Bind here, not in uvicorn: a busy port then raises an error we can report, instead
    # of uvicorn's sys.exit inside a task.
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says it is TCP; without it every keep-alive response waits ~40 ms
    # for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=host, port=bound, log_level="warning", access_log=False, lifespan="on"
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn {host}:{bound}")
    try:
        async with asyncio.timeout(startup_timeout_s):
            while not server.started:
                if task.done():
                    break
                await asyncio.sleep(0.01)
        if not server.started:
            await task  # re-raises the start-up error, if any
            raise ConfigError(f"server on {host}:{bound} did not start")
        url = f"http://{host}:{bound}"
        logger.info("serving on %s", url)
        yield url
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
