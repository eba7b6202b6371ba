"""Loopback helpers for suites and benches that start servers: a free port, readiness.

port = free_port()
proc = subprocess.Popen([...])
wait_ready(f"http://127.0.0.1:{port}/readyz", proc=proc)
"""

from __future__ import annotations

import socket
import subprocess
import time

import httpx

__all__ = ["free_port", "wait_ready"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str, *, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 30.0
) -> None:
    """Poll ``url`` until it answers 200; RuntimeError if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready within {timeout_s:g} s")
