"""Load test of the proxy on loopback: throughput, latency and the proxy's CPU per request.

    .venv/bin/python bench/proxy.py                       # the full table (~2 minutes)
    .venv/bin/python bench/proxy.py --duration 3 --concurrency 16

Three processes: a scripted upstream with a fixed latency (50 ms; a raw asyncio HTTP
server, so its own CPU stays small), ``iapo serve`` (one process, uvicorn), and this
process driving load with a minimal keep-alive HTTP/1.1 client on asyncio. For each
scenario (pass-through, N=1, N=8 with an upstream that honours ``n``, N=8 fanned out
as 8 calls) and each concurrency it measures requests/s, p50/p99 latency directly
against the upstream and through the proxy, and the proxy's CPU time per request
(utime + stime from /proc/<pid>/stat, warm-up included in both CPU and count).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iapo.testing import free_port, wait_ready  # noqa: E402
from policies import (  # noqa: E402
    BudgetSpent,
    ExtractorSpec,
    Policy,
    PromptCandidate,
    TierPolicy,
    save_policy,
)

QUESTION = {"role": "user", "content": "What is 6 + 6? Answer with a number."}
ANSWER = "Adding six and six gives twelve, so the answer is 12."


# -- the upstream: raw asyncio HTTP/1.1, fixed latency ---------------------------------


class _UpstreamRequest(msgspec.Struct):
    n: int = 1


def _completion(n: int) -> bytes:
    body = msgspec.json.encode(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "bench-model",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": 14 * n,
                "total_tokens": 20 + 14 * n,
            },
        }
    )
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class _UpstreamProtocol(asyncio.Protocol):
    responses: ClassVar[dict[int, bytes]] = {}
    latency_s = 0.05

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body, self.buffer = self.buffer[end + 4 : total], self.buffer[total:]
            n = msgspec.json.decode(body, type=_UpstreamRequest).n if body else 1
            response = self.responses.get(n) or self.responses.setdefault(n, _completion(n))
            self.loop.call_later(self.latency_s, self._send, response)

    def _send(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)


async def run_upstream(port: int, latency_s: float) -> None:
    _UpstreamProtocol.latency_s = latency_s
    server = await asyncio.get_running_loop().create_server(
        _UpstreamProtocol, "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


# -- the load driver: keep-alive HTTP/1.1 over asyncio streams -------------------------


def _request_bytes(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length is None:
        raise RuntimeError(f"response without content-length: {head[:200]!r}")
    await reader.readexactly(length)
    return status


class LoadResult(msgspec.Struct):
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    total_requests: int


async def drive(
    port: int,
    body: bytes,
    headers: dict[str, str],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    fanout: int = 1,
    stagger_s: float = 0.0,
) -> LoadResult:
    """``concurrency`` workers; each request is ``fanout`` parallel calls (direct fan-out).

    Worker ``i`` starts ``i/concurrency`` of ``stagger_s`` late: independent clients are
    not phase-locked, and with a fixed upstream latency workers that start together stay
    together, so every response of every worker lands in the same millisecond.
    """
    request = _request_bytes(port, body, headers)
    latencies: list[float] = []
    counts = {"errors": 0, "total": 0}
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

    async def worker(index: int) -> None:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(fanout)]
        await asyncio.sleep(stagger_s * index / concurrency)

        async def call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
            writer.write(request)
            return await _read_response(reader)

        try:
            while (now := loop.time()) < stop_at:
                began = time.perf_counter()
                if fanout == 1:
                    statuses = [await call(*conns[0])]
                else:
                    statuses = list(await asyncio.gather(*(call(r, w) for r, w in conns)))
                elapsed = time.perf_counter() - began
                counts["total"] += 1
                if any(s != 200 for s in statuses):
                    counts["errors"] += 1
                elif now >= measure_from:
                    latencies.append(elapsed)
        finally:
            for _, writer in conns:
                writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    if not latencies:
        return LoadResult(0, counts["errors"], 0.0, float("nan"), float("nan"), counts["total"])
    ms = np.asarray(latencies) * 1000
    return LoadResult(
        requests=len(latencies),
        errors=counts["errors"],
        rps=len(latencies) / duration_s,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        total_requests=counts["total"],
    )


# -- orchestration -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_setup(workdir: Path, upstream_port: int, proxy_port: int) -> Path:
    def policy(task: str, n: int) -> Policy:
        tier = TierPolicy(
            prompt=PromptCandidate("bench", "Answer with a number at the end."),
            n=n,
            strategy="majority",
            expected_utility=0.5,
            interval=(0.4, 0.6),
        )
        return Policy(
            task=task,
            created_at=datetime.now(UTC),
            budget=BudgetSpent(0, 0),
            tiers={"standard": tier},
            extractor=ExtractorSpec(kind="last_number"),
        )

    for task, n in (("n1", 1), ("n8", 8), ("n8fan", 8)):
        save_policy(policy(task, n), workdir / f"{task}.json")
    base = f"http://127.0.0.1:{upstream_port}/v1"
    config = workdir / "proxy.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {proxy_port}

[auth]
disabled = true

[[upstreams]]
name = "with-n"
base_url = "{base}"
model = "bench-model"
max_concurrency = 1024
price_per_1k_prompt_tokens = 0.001
price_per_1k_completion_tokens = 0.002

[[upstreams]]
name = "fan-out"
base_url = "{base}"
model = "bench-model-fan"
supports_n = false
max_concurrency = 1024

[[tasks]]
name = "n1"
policy_file = "n1.json"
upstream = "with-n"

[[tasks]]
name = "n8"
policy_file = "n8.json"
upstream = "with-n"

[[tasks]]
name = "n8fan"
policy_file = "n8fan.json"
upstream = "fan-out"

[request_log]
path = "requests.sqlite"
""",
        encoding="utf-8",
    )
    return config


SCENARIOS = (
    # name, proxy headers, direct body n, direct fan-out
    ("pass-through", {}, 1, 1),
    ("N=1", {"x-iapo-task": "n1"}, 1, 1),
    ("N=8 (n=8)", {"x-iapo-task": "n8"}, 8, 1),
    ("N=8 fan-out", {"x-iapo-task": "n8fan"}, 1, 8),
)


def run_bench(args: argparse.Namespace) -> list[dict[str, object]]:
    body = msgspec.json.encode({"model": "bench-model", "messages": [QUESTION]})
    with tempfile.TemporaryDirectory(prefix="iapo-bench-") as tmp:
        workdir = Path(tmp)
        up_port, proxy_port = free_port(), free_port()
        config = write_setup(workdir, up_port, proxy_port)
        python = sys.executable
        procs = [
            subprocess.Popen(
                [
                    python,
                    __file__,
                    "upstream",
                    "--port",
                    str(up_port),
                    "--latency",
                    str(args.latency),
                ]
            ),
            subprocess.Popen(
                [python, "-m", "iapo", "serve", "--config", str(config)],
                cwd=workdir,
                stdout=subprocess.DEVNULL,
            ),
        ]
        rows: list[dict[str, object]] = []
        try:
            wait_ready(f"http://127.0.0.1:{proxy_port}/readyz", proc=procs[1])
            proxy_pid = procs[1].pid
            for name, headers, n, fanout in SCENARIOS:
                if args.scenario and name not in args.scenario:
                    continue
                for concurrency in args.concurrency:
                    direct_body = msgspec.json.encode(
                        {"model": "bench-model", "messages": [QUESTION], "n": n}
                    )
                    direct = asyncio.run(
                        drive(
                            up_port,
                            direct_body,
                            {},
                            concurrency=concurrency,
                            duration_s=args.duration,
                            warmup_s=args.warmup,
                            fanout=fanout,
                            stagger_s=args.latency,
                        )
                    )
                    before = cpu_seconds(proxy_pid)
                    proxied = asyncio.run(
                        drive(
                            proxy_port,
                            body,
                            headers,
                            concurrency=concurrency,
                            duration_s=args.duration,
                            warmup_s=args.warmup,
                            stagger_s=args.latency,
                        )
                    )
                    cpu = cpu_seconds(proxy_pid) - before
                    row = {
                        "scenario": name,
                        "concurrency": concurrency,
                        "direct": direct,
                        "proxy": proxied,
                        "cpu_ms": 1000 * cpu / max(1, proxied.total_requests),
                    }
                    rows.append(row)
                    print_row(row)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
    return rows


HEADER = (
    f"{'scenario':<14}{'conc':>5} | {'direct rps':>10}{'p50':>8}{'p99':>8} | "
    f"{'proxy rps':>10}{'p50':>8}{'p99':>8} | {'Δp50':>7}{'Δp99':>7} | {'CPU ms/req':>10}{'err':>5}"
)


def print_row(row: dict[str, object]) -> None:
    d, p = row["direct"], row["proxy"]
    assert isinstance(d, LoadResult)
    assert isinstance(p, LoadResult)
    print(
        f"{row['scenario']!s:<14}{row['concurrency']!s:>5} | {d.rps:>10.0f}{d.p50_ms:>8.1f}"
        f"{d.p99_ms:>8.1f} | {p.rps:>10.0f}{p.p50_ms:>8.1f}{p.p99_ms:>8.1f} | "
        f"{p.p50_ms - d.p50_ms:>7.1f}{p.p99_ms - d.p99_ms:>7.1f} | {row['cpu_ms']:>10.2f}"
        f"{p.errors + d.errors:>5}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    up = sub.add_parser("upstream", help="(internal) run the scripted upstream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--latency", type=float, default=0.05, help="upstream latency (s)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=[name for name, *_ in SCENARIOS],
        help="run only these scenarios (default: all)",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    if args.role == "upstream":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_upstream(args.port, args.latency))
        return 0
    print(
        f"upstream latency {args.latency * 1000:.0f} ms, {args.duration:.0f} s per run, "
        f"{os.cpu_count()} CPUs"
    )
    print(HEADER)
    run_bench(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
