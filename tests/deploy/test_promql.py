"""Every PromQL expression of the dashboard and the alert rules is valid (promtool) and
reads only series the proxy exports, with labels those series have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import (
    ALERTS,
    SYNTHETIC_SERIES,
    alert_rules,
    dashboard_targets,
    label_names,
    metric_names,
    run_promtool,
    substitute,
)

# The metrics contract: each family must appear in at least one dashboard query.
CONTRACT_FAMILIES = (
    "iapo_requests_total",
    "iapo_request_duration_seconds",
    "iapo_upstream_request_duration_seconds",
    "iapo_upstream_requests_total",
    "iapo_upstream_errors_total",
    "iapo_samples_per_request",
    "iapo_samples_total",
    "iapo_prompt_tokens_total",
    "iapo_completion_tokens_total",
    "iapo_cost_total",
    "iapo_vote_agreement",
    "iapo_reward_score",
    "iapo_extraction_failures_total",
    "iapo_in_flight_requests",
    "iapo_policy_info",
    "iapo_policy_n",
    "iapo_circuit_state",
    "iapo_n_capped_total",
    "iapo_early_stopped_total",
    "iapo_samples_saved_total",
    "iapo_vote_stops_total",
    "iapo_sampling_waves",
)


def _check_names(where: str, expr: str, exported: dict[str, frozenset[str]]) -> None:
    known = {**exported, **SYNTHETIC_SERIES}
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    unknown = names - known.keys()
    assert not unknown, f"{where}: {sorted(unknown)} are not exported by the proxy"
    available = frozenset().union(*(known[name] for name in names))
    stray = label_names(expr) - available
    assert not stray, f"{where}: labels {sorted(stray)} are on none of {sorted(names)}"


def test_helpers_find_names_and_reject_unknown_ones(exported: dict[str, frozenset[str]]) -> None:
    expr = 'sum by (le, task) (rate(iapo_request_duration_seconds_bucket{tier=~"a|b"}[5m]))'
    assert metric_names(expr) == {"iapo_request_duration_seconds_bucket"}
    assert label_names(expr) == {"le", "task", "tier"}
    _check_names("ok", expr, exported)
    with pytest.raises(AssertionError, match="not exported"):
        _check_names("typo", "rate(iapo_request_total[5m])", exported)
    with pytest.raises(AssertionError, match="labels"):
        _check_names("label", 'sum by (model) (rate(iapo_cost_total{task="x"}[5m]))', exported)
    assert substitute('x{t=~"$task"}[$__rate_interval] ${tier:regex}') == (
        'x{t=~"math"}[1m] standard'
    )


def test_dashboard_queries_name_only_exported_series(
    dashboard: dict[str, Any], exported: dict[str, frozenset[str]]
) -> None:
    targets = dashboard_targets(dashboard)
    assert len(targets) >= 20
    used: set[str] = set()
    for title, ref, expr in targets:
        concrete = substitute(expr)
        assert "$" not in concrete, f"{title}/{ref}: unsubstituted variable in {concrete!r}"
        _check_names(f"panel {title!r} query {ref}", concrete, exported)
        used |= metric_names(concrete)
    for family in CONTRACT_FAMILIES:
        assert any(name.startswith(family) for name in used), f"{family} is on no panel"


def test_alert_rules_name_only_exported_series(exported: dict[str, frozenset[str]]) -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "IapoHighErrorRate",
        "IapoHighLatencyP95",
        "IapoCostPerRequestHigh",
    }
    for rule in rules:
        _check_names(f"alert {rule['alert']}", rule["expr"], exported)
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]


@pytest.mark.prometheus
def test_dashboard_queries_pass_promtool(
    promtool_path: str, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    rules = [
        {"record": f"dashboard:panel_{index}:{ref}", "expr": substitute(expr)}
        for index, (_, ref, expr) in enumerate(dashboard_targets(dashboard))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.prometheus
def test_promtool_rejects_a_broken_expression(promtool_path: str, tmp_path: Path) -> None:
    # The check above proves something only if promtool really parses the expressions.
    path = tmp_path / "broken.yml"
    rule = {"record": "x:y", "expr": "sum by (task (rate(iapo_cost_total[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [rule]}]}))
    assert run_promtool("check", "rules", path).returncode != 0


@pytest.mark.prometheus
def test_alert_rules_pass_promtool(promtool_path: str) -> None:
    result = run_promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@pytest.mark.prometheus
def test_alert_rules_fire_as_their_unit_tests_expect(promtool_path: str) -> None:
    tests = Path(__file__).with_name("alerts_test.yml")
    result = run_promtool("test", "rules", tests)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts_tested = {
        case["alertname"]
        for test in yaml.safe_load(tests.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert alerts_tested == {rule["alert"] for rule in alert_rules()}
