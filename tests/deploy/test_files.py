"""Every YAML file under deploy/ parses, and the compose stack, the Prometheus config and
the Grafana provisioning agree with each other and with the proxy config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from policies import load_policy
from proxy.config import load_config
from tests.deploy.promql import COMPOSE, DASHBOARD, DEPLOY, run_promtool

PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana" / "provisioning"
CONFIG = DEPLOY / "iapo" / "config.toml"
ENV = {"IAPO_API_KEYS": "sk-test"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(COMPOSE)
    return data


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path (relative to deploy/) of a service's bind mounts."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(files) >= 10
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert documents, path
        assert all(isinstance(doc, dict) for doc in documents), f"{path}: not a mapping"


def test_compose_has_the_stack_and_its_mounts_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"upstream", "iapo", "prometheus", "grafana"}
    for name, service in services.items():
        for target, source in _bind_mounts(service).items():
            assert source.exists(), f"{name}: mount {source} → {target} does not exist"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} listens on every interface"
    build = services["iapo"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    # The image's CMD reads /etc/iapo/config.toml; compose mounts deploy/iapo there.
    assert _bind_mounts(services["iapo"])["/etc/iapo"] == CONFIG.parent
    assert "IAPO_API_KEYS" in services["iapo"]["environment"]


def test_compose_proxy_config_loads_and_points_at_the_simulator(compose: dict[str, Any]) -> None:
    config = load_config(CONFIG, env=ENV)
    assert config.server.host == "0.0.0.0"
    assert config.auth.keys_env == "IAPO_API_KEYS"
    assert config.auth.open_metrics
    upstream = urlsplit(config.upstreams[0].base_url)
    command = compose["services"]["upstream"]["command"]
    assert upstream.hostname == "upstream"
    assert str(upstream.port) == command[command.index("--port") + 1]
    for task in config.tasks:
        assert task.policy_file is not None
        policy = load_policy(task.policy_file)
        assert policy.task == task.name
        assert set(policy.tiers) == {"economy", "standard", "premium"}
    published = compose["services"]["iapo"]["ports"][0].rsplit(":", 1)[1]
    assert int(published) == config.server.port


def test_prometheus_scrapes_the_proxy_service(compose: dict[str, Any]) -> None:
    config = _yaml(PROMETHEUS)
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "iapo")
    assert job["metrics_path"] == "/metrics"
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["iapo"]
    assert "iapo" in compose["services"]
    proxy_port = tomllib.loads(CONFIG.read_text())["server"]["port"]
    assert sd["port"] == proxy_port
    mounts = _bind_mounts(compose["services"]["prometheus"])
    assert mounts["/etc/prometheus"] == PROMETHEUS.parent
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file()


@pytest.mark.prometheus
def test_prometheus_config_passes_promtool(promtool_path: str) -> None:
    result = run_promtool("check", "config", PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_grafana_provisioning_matches_compose_and_prometheus(compose: dict[str, Any]) -> None:
    datasources = _yaml(GRAFANA / "datasources" / "prometheus.yml")["datasources"]
    (prometheus,) = datasources
    url = urlsplit(prometheus["url"])
    assert url.hostname in compose["services"]
    assert url.port == 9090
    assert prometheus["type"] == "prometheus"
    assert prometheus["uid"]
    scrape = _yaml(PROMETHEUS)["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape
    (provider,) = _yaml(GRAFANA / "dashboards" / "iapo.yml")["providers"]
    mounts = _bind_mounts(compose["services"]["grafana"])
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    assert mounts["/etc/grafana/provisioning"] == GRAFANA


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    instructions = [
        line.strip() for line in logical.splitlines() if line.strip() and line[0] != "#"
    ]
    final_stage = instructions[max(i for i, x in enumerate(instructions) if x.startswith("FROM"))]
    assert final_stage.startswith("FROM python:3.11-slim")
    users = [x.split()[1] for x in instructions if x.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    (health,) = [x for x in instructions if x.startswith("HEALTHCHECK ")]
    assert "/healthz" in health
    assert "curl" not in health
    (expose,) = [x for x in instructions if x.startswith("EXPOSE ")]
    assert int(expose.split()[1]) == load_config(CONFIG, env=ENV).server.port
    assert 'ENTRYPOINT ["iapo"]' in instructions
    assert 'CMD ["serve", "--config", "/etc/iapo/config.toml"]' in instructions
    # Every COPY from the build context exists and is let through the .dockerignore.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    root = DEPLOY.parent
    for line in instructions:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (root / source).exists(), f"COPY {source}: not in the repository"
                assert source.rstrip("/") in allowed, f"COPY {source}: .dockerignore drops it"
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in packages["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in allowed, f"package {pattern} is not in the image"


def test_example_policy_is_the_simulators_best_arm_per_tier() -> None:
    # The compose and Kubernetes stacks serve this policy against `iapo simulate`: its
    # prompts must be the simulator's (it routes by prompt text) and its numbers true.
    np = pytest.importorskip("numpy")
    from iapo.simulator.exact import majority_credit_exact
    from iapo.simulator.synthetic import MAJORITY_PROMPTS, synthetic_majority_table

    policy = load_policy(DEPLOY / "iapo" / "policies" / "math.json")
    table = synthetic_majority_table()
    credit = majority_credit_exact(table.cat_probs, table.answers, 32).mean(axis=1)
    cost = table.cost_per_prompt[:, None] * np.arange(1, 33)[None, :]
    for name, choice in policy.tiers.items():
        prompt = int(choice.prompt.id)
        assert choice.prompt.text == MAJORITY_PROMPTS[prompt], name
        utility = credit - choice.cost_weight * cost
        best = np.unravel_index(np.argmax(utility), utility.shape)
        assert (prompt, choice.n - 1) == tuple(int(i) for i in best), name
        assert choice.expected_utility == pytest.approx(utility[best], abs=1e-6)


def test_docker_compose_validates_the_file() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    env = {k: v for k, v in os.environ.items() if k != "IAPO_API_KEYS"}

    def config(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv = [tool, "-f", str(COMPOSE), "config"]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=env | extra
        )

    valid = config({"IAPO_API_KEYS": "sk-test"})
    assert valid.returncode == 0, valid.stderr
    resolved = yaml.safe_load(valid.stdout)
    assert resolved["services"]["iapo"]["environment"]["IAPO_API_KEYS"] == "sk-test"
    # Without keys the stack refuses to start rather than run an open proxy.
    missing = config({})
    assert missing.returncode != 0
    assert "IAPO_API_KEYS" in missing.stderr
