"""Soak the proxy: minutes of mixed traffic through ``iapo serve`` against a faulty upstream.

    .venv/bin/python bench/soak.py                       # 10 minutes, concurrency 64, 5% faults
    .venv/bin/python bench/soak.py --minutes 2 --out soak.json

Starts the fault-injecting upstream (``python -m iapo.testing``) and ``iapo serve`` as
subprocesses on loopback, with the request log in a temporary SQLite file, then runs
``--concurrency`` workers, each sending one request after another until the time is up:
pass-through, a task at N=1, a task at N=8, and streaming (pass-through and task). The
upstream injects ``--fault-rate`` faults of every kind (errors, resets, truncation, hangs
and stalls, and a bad upstream's: redirects, 401/403, ``retry-after: inf``, negative or
huge usage, stray bytes after a response). Every request carries a trace tag, so a 5xx
answer is checked against the upstream calls it caused: a 5xx is *justified* when one of
those calls was an injected fault (or the circuit was open). Stray bytes after a complete
answer justify nothing: that answer is good, and the next call must not suffer.

Reports requests sent and answered, errors by class, p50/p99 latency per minute, the
proxy's RSS over time (growth after warm-up), request-log rows against answers, and
re-sends of calls the upstream may have processed, per request. Exit
status 1 when a done-when condition fails (unanswered requests, unjustified 5xx, RSS
growth ≥ 10% after warm-up, log rows ≠ answers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from iapo.testing import free_port, wait_ready
from policies import (
    BudgetSpent,
    ExtractorSpec,
    Policy,
    PromptCandidate,
    TierPolicy,
    now_utc,
    save_policy,
)

KINDS = ("passthrough", "n1", "n8", "stream_passthrough", "stream_task")
CLIENT_SHARD = 16
TIER_OF = {"n1": "economy", "n8": "premium", "stream_task": "economy"}
# Upstream faults after which the answer itself is good: they justify no 5xx.
BENIGN = ("ok", "spike", "extra_bytes")


@dataclass
class Outcome:
    kind: str
    started: float  # seconds since the soak began
    latency: float
    status: int | None  # None: no HTTP answer at all (unanswered)
    error: str | None  # error class: http status, stream_error, timeout, transport
    tag: str
    code: str | None = None


@dataclass
class Soak:
    base_url: str
    key: str
    deadline: float
    started: float
    rng: np.random.Generator
    outcomes: list[Outcome] = field(default_factory=list)
    next_id: int = 0


def write_policy(path: Path) -> None:
    prompt = PromptCandidate("boxed", "Think step by step and put the final answer in \\boxed{}.")
    tiers = {
        name: TierPolicy(prompt, n, "majority", 0.5, (0.4, 0.6))
        for name, n in (("economy", 1), ("standard", 4), ("premium", 8))
    }
    policy = Policy(
        "math",
        now_utc(),
        BudgetSpent(1000, 1000),
        tiers,
        extractor=ExtractorSpec(kind="boxed"),
        method="soak",
    )
    save_policy(policy, path)


def write_config(workdir: Path, upstream_url: str, port: int, deadline_s: float) -> Path:
    config = workdir / "proxy.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
deadline_s = {deadline_s}
drain_timeout_s = 30

[auth]
keys_env = "IAPO_SOAK_KEYS"
open_metrics = true

[[upstreams]]
name = "faulty"
base_url = "{upstream_url}"
model = "fault-model"
timeout_s = 5
connect_timeout_s = 2
max_concurrency = 128
max_retries = 2
price_per_1k_prompt_tokens = 0.5
price_per_1k_completion_tokens = 1.5

[request_log]
path = "requests.sqlite"

[[tasks]]
name = "math"
policy_file = "math.json"
""",
        encoding="utf-8",
    )
    write_policy(workdir / "math.json")
    return config


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def request_body(kind: str, tag: str, rng: np.random.Generator) -> dict[str, Any]:
    a, b = (int(x) for x in rng.integers(2, 99, size=2))
    body: dict[str, Any] = {
        "model": "fault-model",
        "messages": [{"role": "user", "content": f"[[tag:{tag}]] What is {a} times {b}?"}],
    }
    if kind.startswith("stream"):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def one_request(client: httpx.AsyncClient, soak: Soak, kind: str) -> Outcome:
    soak.next_id += 1
    tag = f"s{soak.next_id}"
    headers = {"authorization": f"Bearer {soak.key}"}
    if kind in TIER_OF:
        headers |= {"x-iapo-task": "math", "x-iapo-tier": TIER_OF[kind]}
    body = request_body(kind, tag, soak.rng)
    began = time.monotonic()
    status: int | None = None
    error: str | None = None
    code: str | None = None
    try:
        if body.get("stream"):
            async with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
                status = r.status_code
                lines = [line async for line in r.aiter_lines() if line]
            if status == 200:
                if "data: [DONE]" not in lines or any('"error"' in line for line in lines):
                    error = "stream_error"
            else:
                error = str(status)
                code = _error_code("\n".join(lines))
        else:
            response = await client.post("/chat/completions", json=body, headers=headers)
            status = response.status_code
            if status != 200:
                error = str(status)
                code = _error_code(response.text)
    except httpx.TimeoutException:
        status, error = None, "timeout"
    except httpx.HTTPError as exc:
        # An answer whose head arrived but whose body broke is still unanswered.
        status, error = None, f"transport:{type(exc).__name__}"
    end = time.monotonic()
    return Outcome(kind, began - soak.started, end - began, status, error, tag, code)


def _error_code(text: str) -> str | None:
    try:
        code = json.loads(text)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


async def worker(client: httpx.AsyncClient, soak: Soak) -> None:
    while time.monotonic() < soak.deadline:
        kind = KINDS[int(soak.rng.integers(len(KINDS)))]
        soak.outcomes.append(await one_request(client, soak, kind))


async def sample_rss(pid: int, soak: Soak, samples: list[tuple[float, int]], every: float) -> None:
    while time.monotonic() < soak.deadline:
        rss = rss_kib(pid)
        if rss is not None:
            samples.append((time.monotonic() - soak.started, rss))
        await asyncio.sleep(every)


async def drive(
    base_url: str, key: str, pid: int, minutes: float, concurrency: int, seed: int
) -> tuple[list[Outcome], list[tuple[float, int]]]:
    started = time.monotonic()
    soak = Soak(base_url, key, started + minutes * 60, started, np.random.default_rng(seed))
    rss: list[tuple[float, int]] = []
    # Several small pools: httpcore's pool bookkeeping grows with connections x waiters,
    # and the load generator must not be what limits the run.
    shards = -(-concurrency // CLIENT_SHARD)
    limits = httpx.Limits(max_connections=CLIENT_SHARD, max_keepalive_connections=CLIENT_SHARD)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=90, limits=limits)
            )
            for _ in range(shards)
        ]
        sampler = asyncio.create_task(sample_rss(pid, soak, rss, every=5.0))
        await asyncio.gather(*(worker(clients[i % shards], soak) for i in range(concurrency)))
        await sampler
    final = rss_kib(pid)
    if final is not None:
        rss.append((time.monotonic() - started, final))
    return soak.outcomes, rss


def log_rows(path: Path) -> dict[str, int]:
    """Rows of the proxy's request log by task (``passthrough`` for pass-through rows)."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT task, COUNT(*) FROM request_log GROUP BY task").fetchall()
    return {str(task): int(count) for task, count in rows}


def scrape(base: str) -> dict[str, dict[str, float]]:
    """What the proxy itself counted: upstream errors by kind, requests by status class,
    circuit state (``/metrics`` is open in the soak config)."""
    text = httpx.get(base + "/metrics", timeout=10).text
    wanted = {
        "iapo_upstream_errors_total": "kind",
        "iapo_requests_total": "status_class",
        "iapo_circuit_state": "upstream",
        "iapo_upstream_resends_total": "upstream",
        "iapo_request_log_lost_total": "reason",
    }
    out: dict[str, dict[str, float]] = {name: {} for name in wanted}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = wanted.get(sample.name)
            if label is not None:
                key = sample.labels.get(label, "")
                out[sample.name][key] = out[sample.name].get(key, 0.0) + sample.value
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(
    outcomes: list[Outcome],
    rss: list[tuple[float, int]],
    calls: list[dict[str, Any]],
    rows_by_task: dict[str, int],
    warmup_s: float,
) -> dict[str, Any]:
    faults_by_tag: dict[str, list[str]] = defaultdict(list)
    for call in calls:
        if call.get("tag"):
            faults_by_tag[call["tag"]].append(call["fault"])
    answered = [o for o in outcomes if o.status is not None]
    answered_task = sum(1 for o in answered if o.kind in TIER_OF)
    rows = sum(rows_by_task.values())
    fives = [o for o in answered if o.status is not None and o.status >= 500]
    unjustified = [
        o
        for o in fives
        if o.code != "circuit_open"
        and not any(f not in BENIGN for f in faults_by_tag.get(o.tag, []))
    ]
    minutes: dict[int, list[float]] = defaultdict(list)
    for o in answered:
        minutes[int(o.started // 60)].append(o.latency)
    after = [kib for t, kib in rss if t >= warmup_s]
    rss_start = after[0] if after else None
    rss_end = rss[-1][1] if rss else None
    growth = (rss_end / rss_start - 1.0) if rss_start and rss_end else None
    return {
        "sent": len(outcomes),
        "answered": len(answered),
        "unanswered": len(outcomes) - len(answered),
        "by_kind": dict(Counter(o.kind for o in outcomes)),
        "errors": dict(Counter(o.error for o in outcomes if o.error)),
        "error_codes": dict(Counter(o.code for o in outcomes if o.code)),
        "status_5xx": len(fives),
        "status_5xx_unjustified": len(unjustified),
        "unjustified_examples": [o.tag for o in unjustified[:10]],
        "latency_per_minute": {
            m: {
                "count": len(v),
                "p50_ms": round(percentile(v, 50) * 1000, 1),
                "p99_ms": round(percentile(v, 99) * 1000, 1),
            }
            for m, v in sorted(minutes.items())
        },
        "rss_kib_first": rss[0][1] if rss else None,
        "rss_kib_after_warmup": rss_start,
        "rss_kib_end": rss_end,
        "rss_growth_after_warmup": None if growth is None else round(growth, 4),
        "rss_samples": rss,
        "upstream_calls": len(calls),
        "upstream_faults": dict(Counter(c["fault"] for c in calls)),
        "request_log_rows": rows,
        "request_log_rows_by_task": rows_by_task,
        "answered_task_requests": answered_task,
        "log_rows_equal_answered": rows == len(answered),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-s", type=float, help="RSS baseline after this (default: 10%%)")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep the run's files here (default: temp)")
    args = parser.parse_args(argv)
    warmup = args.warmup_s if args.warmup_s is not None else args.minutes * 6.0

    with tempfile.TemporaryDirectory(prefix="iapo-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(24)
        env = {**os.environ, "IAPO_SOAK_KEYS": key, "PYTHONUNBUFFERED": "1"}
        port_file = workdir / "upstream.port"
        calls_log = workdir / "upstream-calls.jsonl"
        upstream = subprocess.Popen(
            [
                *(sys.executable, "-m", "iapo.testing", "--port-file", str(port_file)),
                *("--seed", str(args.seed), "--fault-rate", str(args.fault_rate)),
                *("--latency-ms", str(args.latency_ms), "--jitter-ms", str(args.latency_ms)),
                *("--hang-s", "60", "--log", str(calls_log)),
            ],
            stdout=subprocess.PIPE,
            env=env,
        )
        proxy: subprocess.Popen[bytes] | None = None
        try:
            assert upstream.stdout is not None
            upstream.stdout.readline()
            upstream_url = f"http://127.0.0.1:{int(port_file.read_text())}/v1"
            port = free_port()
            config = write_config(workdir, upstream_url, port, deadline_s=30)
            proxy_log = (workdir / "proxy.log").open("wb")
            proxy = subprocess.Popen(
                [sys.executable, "-m", "iapo", "serve", "--config", str(config)],
                stdout=proxy_log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            base = f"http://127.0.0.1:{port}"
            wait_ready(base + "/readyz", proc=proxy, timeout_s=60)
            print(
                f"soak: {args.minutes} min, concurrency {args.concurrency}, "
                f"faults {args.fault_rate:.0%}, files in {workdir}"
            )
            outcomes, rss = asyncio.run(
                drive(base + "/v1", key, proxy.pid, args.minutes, args.concurrency, args.seed)
            )
            proxy_metrics = scrape(base)
            proxy.send_signal(signal.SIGTERM)
            proxy_exit = proxy.wait(timeout=60)
        finally:
            for proc in (proxy, upstream):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        calls = [json.loads(line) for line in calls_log.read_text().splitlines() if line]
        report = summarise(outcomes, rss, calls, log_rows(workdir / "requests.sqlite"), warmup)
        report["proxy_exit_code"] = proxy_exit
        report["proxy_metrics"] = proxy_metrics
        resends = sum(proxy_metrics["iapo_upstream_resends_total"].values())
        report["upstream_resends"] = resends
        report["resends_per_request"] = round(resends / max(1, report["answered"]), 5)
        report["request_log_lost"] = proxy_metrics["iapo_request_log_lost_total"]
        report["config"] = {k: str(v) for k, v in vars(args).items()}

    rss_samples = report.pop("rss_samples")
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps({**report, "rss_samples": rss_samples}, indent=2))
    growth = report["rss_growth_after_warmup"]
    ok = (
        report["unanswered"] == 0
        and report["status_5xx_unjustified"] == 0
        and growth is not None
        and growth < 0.10
        and report["log_rows_equal_answered"]
    )
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
