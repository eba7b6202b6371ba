"""A real Prometheus scrapes real proxies: the deploy/ files work end to end.

The compose stack in miniature, on 127.0.0.1 with free ports: ``iapo simulate`` is the
upstream; two ``iapo serve`` replicas run the config and policy of ``deploy/iapo`` (only
the upstream URL, the listen address and the request-log path changed, and a Best-of-N
task added so the reward panels have data); Debian's
``prometheus`` scrapes each replica every second with the ``iapo`` job of
``deploy/prometheus/prometheus.yml`` and evaluates ``deploy/prometheus/alerts.yml``.
Requests go through the openai SDK; the test reads them back through Prometheus' HTTP API
summed over replicas, runs every dashboard query, and checks the image's HEALTHCHECK
command and SIGTERM shutdown against a live replica."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
import yaml

from iapo.testing import free_port
from policies import (
    BudgetSpent,
    Policy,
    PromptCandidate,
    RewardSpec,
    TierPolicy,
    load_policy,
    save_policy,
)
from tests.deploy.promql import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    GRAFANA_VALUES,
    alert_rules,
    dashboard_targets,
    substitute,
)

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

PROMETHEUS = shutil.which("prometheus")
KEY = "sk-e2e-prometheus"
DEADLINE_S = 30.0
REPLICAS = 2
# Requests per tier, spread over the replicas; each is served with the policy's (prompt, N).
TRAFFIC = {"economy": 3, "standard": 2, "premium": 1}
T = TypeVar("T")


def _wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = DEADLINE_S) -> T:
    """Poll ``probe`` until it returns something other than None (bounded)."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, OSError) as exc:
            last_error, value = exc, None
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} ({last_error!r})")


def _ok(url: str) -> bool | None:
    return True if httpx.get(url, timeout=2).status_code == 200 else None


def _ready(process: Process, url: str) -> bool | None:
    process.alive()
    return _ok(url)


class Process:
    """A child process whose output goes to a file, shown when a test fails."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(argv, stdout=self._file, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> None:
        code = self.popen.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.output()}"

    def output(self) -> str:
        if not self._file.closed:
            self._file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._file.close()
        return self.popen.returncode


def _reward_task(config_dir: Path, reward_url: str) -> str:
    """A Best-of-N task served beside the deploy config's ``math`` (the simulator scores it),
    so the reward panels have data: its policy file, and its ``[[tasks]]`` entry."""
    from iapo.simulator import make_simulator

    simulator = make_simulator()
    assert simulator.reward is not None
    prompt = PromptCandidate("blunt", simulator.reward_prompts[0])
    policy = Policy(
        task="assist",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        budget=BudgetSpent(planned=1, spent=1),
        tiers={
            "standard": TierPolicy(
                prompt=prompt, n=3, strategy="best_of_n", expected_utility=0.5, interval=(0, 1)
            )
        },
        reward=RewardSpec(url=reward_url, objectives=simulator.reward.objectives),
    )
    save_policy(policy, config_dir / "policies" / "assist.json")
    return '\n[[tasks]]\nname = "assist"\npolicy_file = "policies/assist.json"\n'


def _iapo(*args: str) -> list[str]:
    return [sys.executable, "-m", "iapo", *args]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Simulator, proxy and Prometheus, started in that order and stopped in reverse."""
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    env = {**os.environ, "IAPO_API_KEYS": KEY}
    processes: list[Process] = []
    try:
        sim_port = free_port()
        simulator = Process(
            "iapo simulate",
            _iapo("simulate", "--host", "127.0.0.1", "--port", str(sim_port)),
            tmp_path / "simulate.log",
            env,
        )
        processes.append(simulator)

        # The deploy config, with the compose service name swapped for the local simulator.
        config_dir = tmp_path / "iapo"
        shutil.copytree(DEPLOY / "iapo", config_dir)
        config = config_dir / "config.toml"
        text = config.read_text()
        assert 'base_url = "http://upstream:8900/v1"' in text
        config.write_text(
            text.replace("http://upstream:8900/v1", f"http://127.0.0.1:{sim_port}/v1")
            + _reward_task(config_dir, f"http://127.0.0.1:{sim_port}/v1/reward")
        )
        _wait_for("the simulator", lambda: _ok(f"http://127.0.0.1:{sim_port}/healthz"))
        # Two replicas, as `--scale iapo=2` or a Deployment would run them: one process each,
        # each scraped on its own, sharing only the read-only config and policy.
        proxies: list[Process] = []
        ports: list[int] = []
        for replica in range(REPLICAS):
            ports.append(free_port())
            argv = _iapo("serve", "--config", str(config), "--host", "127.0.0.1")
            replica_env = {**env, "IAPO_REQUEST_LOG": str(tmp_path / f"log-{replica}.sqlite")}
            proxies.append(
                Process(
                    f"iapo serve #{replica}",
                    [*argv, "--port", str(ports[-1])],
                    tmp_path / f"serve-{replica}.log",
                    replica_env,
                )
            )
            processes.append(proxies[-1])
        proxy_urls = [f"http://127.0.0.1:{port}" for port in ports]

        # The iapo job of the compose Prometheus, pointed at this proxy, scraping every second.
        deployed = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        job = next(j for j in deployed["scrape_configs"] if j["job_name"] == "iapo")
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in ports]}]
        job["scrape_interval"] = "1s"
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [job],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        prom_port = free_port()
        prometheus = Process(
            "prometheus",
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            tmp_path / "prometheus.log",
            env,
        )
        processes.append(prometheus)
        prom_url = f"http://127.0.0.1:{prom_port}"
        for proxy, url in zip(proxies, proxy_urls, strict=True):
            _wait_for(f"{proxy.name} /readyz", partial(_ready, proxy, f"{url}/readyz"))
        _wait_for("Prometheus", partial(_ready, prometheus, f"{prom_url}/-/ready"))
        yield {"proxies": proxies, "proxy_urls": proxy_urls, "prom_url": prom_url}
    finally:
        for process in reversed(processes):
            process.stop()


def _query(prom_url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _scalar(prom_url: str, expr: str) -> float | None:
    result = _query(prom_url, expr)
    return float(result[0]["value"][1]) if result else None


def _send_traffic(proxy_urls: list[str]) -> dict[str, float]:
    """Send the requests of TRAFFIC round-robin over the replicas; returns the samples and
    cost the proxy reported in its response headers."""
    clients = [
        openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) for url in proxy_urls
    ]
    samples = cost = 0.0
    question = 0
    for tier, count in TRAFFIC.items():
        for _ in range(count):
            question += 1
            client = clients[question % len(clients)]
            raw = client.chat.completions.with_raw_response.create(
                model="iapo-sim",
                messages=[{"role": "user", "content": f"Problem train-{question}"}],
                extra_headers={"X-IAPO-Task": "math", "X-IAPO-Tier": tier},
            )
            completion = raw.parse()
            assert completion.choices[0].message.content
            assert raw.headers["x-iapo-tier"] == tier
            samples += int(raw.headers["x-iapo-samples"].split("/")[0])
            cost += float(raw.headers["x-iapo-cost"])
    for client in clients:
        client.close()
    return {"samples": samples, "cost": cost}


def test_prometheus_scrapes_what_the_proxy_served(stack: dict[str, Any]) -> None:
    prom_url = stack["prom_url"]
    sent = _send_traffic(stack["proxy_urls"])
    total = sum(TRAFFIC.values())

    selector = 'iapo_requests_total{job="iapo",task="math",status_class="2xx"}'
    answered = f"sum({selector})"
    _wait_for(
        f"Prometheus to count {total} requests",
        lambda: True if _scalar(prom_url, answered) == total else None,
    )
    assert _scalar(prom_url, answered) == total
    by_tier = {
        row["metric"]["tier"]: float(row["value"][1])
        for row in _query(prom_url, f"sum by (tier) ({selector})")
    }
    assert by_tier == {tier: float(count) for tier, count in TRAFFIC.items()}
    assert _query(prom_url, 'iapo_requests_total{status_class!="2xx"}') == []
    # The proxy's response headers and its metrics agree, through Prometheus.
    samples = _scalar(prom_url, 'sum(iapo_samples_total{task="math"})')
    assert samples == sent["samples"]
    assert samples >= total
    cost = _scalar(prom_url, 'sum(iapo_cost_total{task="math"})')
    assert cost == pytest.approx(sent["cost"], rel=1e-3)
    # Each replica is its own target and served part of the traffic; sum() adds them up.
    assert _scalar(prom_url, 'sum(up{job="iapo"})') == REPLICAS
    per_replica = _query(prom_url, f"sum by (instance) ({selector})")
    assert len(per_replica) == REPLICAS
    assert all(float(row["value"][1]) > 0 for row in per_replica)

    # The active policy is the one deploy/iapo serves.
    policy = load_policy(DEPLOY / "iapo" / "policies" / "math.json")
    info = _query(prom_url, 'max by (tier, prompt, n) (iapo_policy_info{task="math"})')
    assert {(r["metric"]["tier"], r["metric"]["prompt"], r["metric"]["n"]) for r in info} == {
        (name, choice.prompt.id, str(choice.n)) for name, choice in policy.tiers.items()
    }


def test_dashboard_and_alert_queries_run_on_real_data(stack: dict[str, Any]) -> None:
    prom_url = stack["prom_url"]
    _send_traffic(stack["proxy_urls"])
    # Best-of-N traffic, so the reward-score panels (mean and p50) have data.
    for url in stack["proxy_urls"]:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="iapo-sim",
            messages=[{"role": "user", "content": "How do I sharpen a knife?"}],
            extra_headers={"X-IAPO-Task": "assist"},
        )
        assert "x-iapo-score" in raw.headers
    # Two scrapes after the traffic, so rate() over the window has points to work with.
    for task in ("math", "assist"):
        _wait_for(
            f"two scrapes of the {task} traffic",
            lambda task=task: _scalar(  # type: ignore[misc]
                prom_url, f'count_over_time(sum(iapo_requests_total{{task="{task}"}})[1m:1s]) >= 3'
            ),
        )
    dashboard = json.loads(DASHBOARD.read_text())
    values = {**GRAFANA_VALUES, "task": "math|assist", "tier": ".*", "upstream": ".*"}
    empty: list[str] = []
    for title, ref, expr in dashboard_targets(dashboard):
        concrete = substitute(expr, values)
        if not _query(prom_url, concrete):
            empty.append(f"{title}/{ref}")
    # Capped N, circuit changes and upstream errors do not happen in this run; every other
    # panel must show data (the reward score's mean included: it has no _sum series).
    allowed_empty = {
        "Capped N and early stops/A",
        "Upstream errors by kind/A",
    }
    assert set(empty) <= allowed_empty, f"panels without data: {sorted(set(empty) - allowed_empty)}"
    assert "Request rate/A" not in empty

    # Prometheus loaded every alert rule and evaluates it without error on these series.
    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prom_url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
        done = rules and all(r["lastEvaluation"] > "2000" for r in rules)
        return rules if done else None

    rules = _wait_for("the alert rules to be evaluated", evaluated)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    firing = [r["name"] for r in rules if r["state"] != "inactive"]
    assert firing == [], "a healthy stack must not alert"


def test_healthcheck_of_the_image_passes_against_the_proxy(stack: dict[str, Any]) -> None:
    dockerfile = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    (line,) = [x for x in dockerfile.splitlines() if x.startswith("HEALTHCHECK ")]
    argv: list[str] = json.loads(line[line.index("CMD ") + 4 :])
    assert argv[0] == "python"
    argv[0] = sys.executable
    port = stack["proxy_urls"][0].rsplit(":", 1)[1]
    healthy = subprocess.run(argv, env={**os.environ, "IAPO_PORT": port}, timeout=15, check=False)
    assert healthy.returncode == 0
    unhealthy = subprocess.run(
        argv,
        env={**os.environ, "IAPO_PORT": str(free_port())},
        capture_output=True,
        timeout=15,
        check=False,
    )
    assert unhealthy.returncode != 0
    # `docker stop` and Kubernetes send SIGTERM: the proxy drains and exits by itself
    # (uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM).
    proxy: Process = stack["proxies"][0]
    proxy.popen.send_signal(signal.SIGTERM)
    code = proxy.popen.wait(timeout=15)
    assert code in (0, -signal.SIGTERM), f"exit code {code}:\n{proxy.output()}"
