from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import OTHER, ProxyMetrics, status_class

CONTRACT = {
    "iapo_requests": "counter",
    "iapo_request_duration_seconds": "histogram",
    "iapo_upstream_request_duration_seconds": "histogram",
    "iapo_upstream_requests": "counter",
    "iapo_upstream_errors": "counter",
    "iapo_samples_per_request": "histogram",
    "iapo_samples": "counter",
    "iapo_prompt_tokens": "counter",
    "iapo_completion_tokens": "counter",
    "iapo_cost": "counter",
    "iapo_vote_agreement": "histogram",
    "iapo_reward_score": "histogram",
    "iapo_reward_score_signed_sum": "counter",
    "iapo_extraction_failures": "counter",
    "iapo_in_flight_requests": "gauge",
    "iapo_policy_info": "gauge",
    "iapo_policy_n": "gauge",
    "iapo_circuit_state": "gauge",
    "iapo_n_capped": "counter",
    "iapo_early_stopped": "counter",
    "iapo_samples_saved": "counter",
    "iapo_vote_stops": "counter",
    "iapo_sampling_waves": "histogram",
    "iapo_policy_reloads_rejected": "counter",
    "iapo_policy_rejected": "gauge",
}


def families(metrics: ProxyMetrics) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(metrics.render().decode())}


def test_every_contract_metric_is_registered_with_its_type() -> None:
    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry)
    assert metrics.registry is registry
    found = families(metrics)
    for name, kind in CONTRACT.items():
        assert found.get(name) == kind, name


def test_unknown_labels_become_other() -> None:
    metrics = ProxyMetrics()
    metrics.allow(tasks=["math"], tiers=["economy"], upstreams=["vllm"])
    assert metrics.task("math") == "math"
    assert metrics.task("passthrough") == "passthrough"
    assert metrics.task("x" * 500) == OTHER
    assert metrics.task(None) == OTHER
    assert metrics.tier("gold") == OTHER
    assert metrics.upstream("vllm") == "vllm"
    assert metrics.upstream("evil") == OTHER


def test_policy_info_keeps_one_series_per_task_and_tier() -> None:
    metrics = ProxyMetrics()
    metrics.allow(tasks=["math"], tiers=["standard"])
    metrics.set_policy("math", "standard", prompt="p1", n=4, strategy="majority", policy="aaa")
    metrics.set_policy("math", "standard", prompt="p2", n=8, strategy="majority", policy="bbb")
    text = metrics.render().decode()
    assert 'policy="bbb"' in text
    assert 'policy="aaa"' not in text
    assert 'iapo_policy_n{task="math",tier="standard"} 8.0' in text


def test_circuit_state_and_status_class() -> None:
    metrics = ProxyMetrics()
    metrics.allow(upstreams=["u"])
    metrics.set_circuit("u", "open")
    assert 'iapo_circuit_state{upstream="u"} 2.0' in metrics.render().decode()
    assert [status_class(s) for s in (200, 204, 400, 429, 500, 503, 101)] == [
        "2xx",
        "2xx",
        "4xx",
        "4xx",
        "5xx",
        "5xx",
        "5xx",
    ]
