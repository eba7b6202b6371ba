"""The Grafana dashboard: up to date with its generator, well formed, and it has the
panels the issue asks for, filtered by the task and tier variables."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType
from typing import Any

from tests.deploy.promql import DASHBOARD, DEPLOY, dashboard_targets

REQUIRED_PANELS = (
    "Request rate",
    "End-to-end latency p50 / p95 / p99",
    "Samples per request",
    "Tokens per request",
    "Tokens per second",
    "Cost per request",
    "Cost per second",
    "Vote agreement",
    "Reward score",
    "Answer-extraction failures",
    "Upstream errors by kind",
    "In-flight requests",
    "Active policy per task and tier",
)


def _generator() -> ModuleType:
    path = DEPLOY / "grafana" / "build_dashboard.py"
    spec = importlib.util.spec_from_file_location("build_dashboard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_committed_json_is_what_the_generator_writes() -> None:
    generator = _generator()
    assert DASHBOARD.read_text(encoding="utf-8") == generator.render(), (
        "run: python deploy/grafana/build_dashboard.py"
    )
    assert generator.main(["--check"]) == 0


def test_is_a_bare_dashboard_model(dashboard: dict[str, Any]) -> None:
    assert "dashboard" not in dashboard
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None


def test_has_every_required_panel(dashboard: dict[str, Any]) -> None:
    titles = {p["title"] for p in _panels(dashboard)}
    missing = [title for title in REQUIRED_PANELS if title not in titles]
    assert not missing


def test_panel_ids_are_unique_and_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] <= grid["x"] + grid["w"] <= 24, panel["title"]
        own = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not own & cells, f"{panel['title']} overlaps another panel"
        cells |= own


def test_queries_use_the_datasource_variable_and_filter_by_task_and_tier(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("task", "tier"):
        query = variables[name]["query"]["query"]
        assert query.startswith("label_values(iapo_requests_total")
        assert query.endswith(f"{name})")
        assert variables[name]["multi"]
        assert variables[name]["includeAll"]
    for panel in _panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    for title, ref, expr in dashboard_targets(dashboard):
        if "task" in expr and "upstream" not in expr:
            assert 'task=~"$task"' in expr, f"{title}/{ref} ignores the task variable"
        if "tier" in expr and "upstream" not in expr:
            assert 'tier=~"$tier"' in expr, f"{title}/{ref} ignores the tier variable"
        if "rate(" in expr:
            assert "[$__rate_interval]" in expr, f"{title}/{ref} uses a fixed rate window"


def test_latency_quantiles_aggregate_buckets_over_replicas(dashboard: dict[str, Any]) -> None:
    latency = [
        expr
        for title, _, expr in dashboard_targets(dashboard)
        if title.startswith("End-to-end latency")
    ]
    assert [expr.split(",")[0] for expr in latency] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    ]
    for expr in latency:
        assert "sum by (le, task, tier) (rate(iapo_request_duration_seconds_bucket{" in expr


def test_legends_name_labels_the_query_keeps(dashboard: dict[str, Any]) -> None:
    # A legend like "{{task}} / {{tier}}" is blank for a label the aggregation dropped.
    grouping = re.compile(r"\bby\s*\(([^)]*)\)")
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            wanted = set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
            if not wanted:
                continue
            groups = [
                {name.strip() for name in group.split(",")}
                for group in grouping.findall(target["expr"])
            ]
            assert groups, f"{panel['title']}: legend {wanted} but no grouping"
            # Every aggregation in the expression must keep the legend's labels.
            for kept in groups:
                missing = wanted - kept
                assert not missing, f"{panel['title']}/{target['refId']}: {missing} dropped"
