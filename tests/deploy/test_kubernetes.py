"""The kustomize manifests: they parse, reference files that exist, agree with the proxy
config and the image, and `kubectl kustomize` builds them where kubectl is installed."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import load_policy
from proxy.config import load_config
from tests.deploy.promql import DEPLOY, KUSTOMIZE, run_promtool

ENV = {"IAPO_API_KEYS": "sk-test"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in _documents(KUSTOMIZE / name):
            assert doc["apiVersion"]
            assert doc["kind"]
            assert doc["metadata"]["name"]
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _proxy_container(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    pod = resources[("Deployment", "iapo")]["spec"]["template"]["spec"]
    container: dict[str, Any] = next(c for c in pod["containers"] if c["name"] == "iapo")
    return container


def test_generated_config_loads_and_matches_the_compose_policy(
    kustomization: dict[str, Any], tmp_path: Path
) -> None:
    (generator,) = kustomization["configMapGenerator"]
    keys: dict[str, Path] = {}
    for entry in generator["files"]:
        key, _, source = entry.partition("=")
        keys[key] = KUSTOMIZE / (source or key)
        assert keys[key].is_file(), entry
    # Lay the ConfigMap out as the Deployment mounts it, then load it as the pod would.
    resources = {name: _documents(KUSTOMIZE / name) for name in kustomization["resources"]}
    deployment = next(d for d in resources["deployment.yaml"] if d["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == generator["name"]
    for item in volume["configMap"]["items"]:
        target = tmp_path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(keys[item["key"]].read_bytes())
    config = load_config(tmp_path / "config.toml", env=ENV)
    for task in config.tasks:
        assert task.policy_file is not None
        policy = load_policy(task.policy_file)
        compose_policy = load_policy(DEPLOY / "iapo" / "policies" / f"{task.name}.json")
        assert policy == compose_policy, "the Kubernetes and compose example policies differ"
    assert config.request_log.path == "/var/lib/iapo/requests.sqlite"


def test_proxy_pods_are_stateless_non_root_replicas(
    resources: dict[tuple[str, str], dict[str, Any]],
) -> None:
    deployment = resources[("Deployment", "iapo")]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    container = _proxy_container(resources)
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The request log lives on a per-pod emptyDir, never on a volume shared by replicas.
    assert "emptyDir" in volumes[mounts["/var/lib/iapo"]["name"]]
    assert mounts["/etc/iapo"]["readOnly"] is True
    assert not any("persistentVolumeClaim" in v for v in volumes.values())


def test_probes_ports_and_scrape_annotations_agree(
    resources: dict[tuple[str, str], dict[str, Any]],
) -> None:
    port = tomllib.loads((KUSTOMIZE / "config.toml").read_text())["server"]["port"]
    container = _proxy_container(resources)
    (http,) = container["ports"]
    assert http["containerPort"] == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": http["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": http["name"]}
    template = resources[("Deployment", "iapo")]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = resources[("Service", "iapo")]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == http["name"]
    pdb = resources[("PodDisruptionBudget", "iapo")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] < resources[("Deployment", "iapo")]["spec"]["replicas"]
    # The drain must finish inside the grace period, after the preStop pause.
    config = load_config(KUSTOMIZE / "config.toml", env=ENV)
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert pause + config.server.drain_timeout_s < grace


def test_proxy_config_points_at_the_simulator_service(
    resources: dict[tuple[str, str], dict[str, Any]],
) -> None:
    config = load_config(KUSTOMIZE / "config.toml", env=ENV)
    service = resources[("Service", "iapo-simulator")]
    port = service["spec"]["ports"][0]["port"]
    assert config.upstreams[0].base_url == f"http://{service['metadata']['name']}:{port}/v1"


def test_pod_discovery_scrape_config_keeps_annotated_pods() -> None:
    config = yaml.safe_load((KUSTOMIZE / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]


@pytest.mark.prometheus
def test_pod_discovery_scrape_config_passes_promtool(promtool_path: str) -> None:
    result = run_promtool("check", "config", KUSTOMIZE / "prometheus" / "prometheus.yml")
    if "field kubernetes_sd_configs not found" in result.stderr + result.stdout:
        # Debian builds Prometheus without Kubernetes discovery; upstream builds have it.
        pytest.skip("this promtool was built without Kubernetes service discovery")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    assert all(doc["metadata"]["namespace"] == "iapo" for doc in docs)
    config_map = next(doc for doc in docs if doc["kind"] == "ConfigMap")
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "iapo"
    )
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    # kustomize rewrote the reference to the hashed ConfigMap name.
    assert any(
        v.get("configMap", {}).get("name") == config_map["metadata"]["name"] for v in volumes
    )
    assert set(config_map["data"]) == {"config.toml", "math.json"}


def test_kubernetes_and_compose_configs_differ_only_in_the_upstream_url() -> None:
    compose = tomllib.loads((DEPLOY / "iapo" / "config.toml").read_text())
    kubernetes = tomllib.loads((KUSTOMIZE / "config.toml").read_text())
    assert compose["upstreams"][0].pop("base_url") != kubernetes["upstreams"][0].pop("base_url")
    assert compose == kubernetes
