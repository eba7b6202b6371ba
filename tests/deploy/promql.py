"""Helpers shared by the deploy tests: where things are, Grafana variables, PromQL names.

No PromQL parser is available in Python; promtool checks the syntax, and these helpers
only pull out the names an expression uses (metrics, and labels in matchers and
``by``/``without``/``on``/``ignoring`` lists) so the tests can hold them against what the
proxy really exports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import ProxyMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "iapo.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
KUSTOMIZE = DEPLOY / "kubernetes"

# Values a Grafana dashboard would put in place of its variables.
GRAFANA_VALUES: Mapping[str, str] = {
    "task": "math",
    "tier": "standard",
    "upstream": "simulator",
    "datasource": "prometheus",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]")

# Prometheus' own series that rules may name besides the proxy's metrics.
SYNTHETIC_SERIES: Mapping[str, frozenset[str]] = {"up": frozenset({"job", "instance"})}

_METRIC = re.compile(r"\b(iapo_[a-z0-9_]+|up)\b(?!\s*\()")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def substitute(expr: str, values: Mapping[str, str] = GRAFANA_VALUES) -> str:
    """``expr`` with Grafana's ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]`` replaced.

    An unknown variable raises KeyError, so a new dashboard variable needs a test value.
    """

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return _VARIABLE.sub(replace, expr)


def metric_names(expr: str) -> set[str]:
    """The series names an expression reads (``iapo_*`` and Prometheus' ``up``)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def label_names(expr: str) -> set[str]:
    """Label names used in matchers and grouping clauses (``le`` included)."""
    labels = set(_MATCHER.findall(expr))
    for group in _GROUPING.findall(_STRING.sub('""', expr)):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    return labels


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name ``ProxyMetrics`` exports, with its label names, read from a real
    text exposition after each metric has one observation (a negative one for histograms:
    prometheus_client then leaves out ``_sum`` where the buckets go below 0, and a query
    reading such a ``_sum`` must fail here). No list of suffixes is assumed.
    """
    metrics = ProxyMetrics()
    for collector in vars(metrics).values():
        # prometheus_client keeps a metric's label names in ``_labelnames`` (no public getter).
        names = getattr(collector, "_labelnames", None)
        if names is None or not hasattr(collector, "labels"):
            continue
        child = collector.labels(*(["x"] * len(names)))
        for method, value in (("observe", -0.5), ("inc", 1.0), ("set", 1.0)):
            if hasattr(child, method):
                getattr(child, method)(value)
                break
    series: dict[str, set[str]] = {}
    exposition = metrics.render().decode()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in series.items()}


def dashboard_targets(dashboard: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query in the dashboard, nested rows included."""
    found: list[tuple[str, str, str]] = []

    def walk(panels: Iterable[Mapping[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["refId"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/alerts.yml."""
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def promtool() -> str | None:
    return shutil.which("promtool")


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = promtool()
    assert tool is not None
    return subprocess.run(
        [tool, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
