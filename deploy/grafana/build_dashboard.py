"""Write deploy/grafana/dashboards/iapo.json, the Grafana dashboard of the iapo proxy.

The dashboard is generated so that its two dozen panels stay consistent (same label
filters, same rate window, same legend format); the JSON it writes is committed, and
tests/deploy checks that it is up to date and that every query is valid PromQL over
metrics the proxy exports. Run it after changing a panel:

    python deploy/grafana/build_dashboard.py

The output is a bare dashboard model (no ``{"dashboard": ...}`` wrapper), the form
Grafana's file provisioning and its "Import dashboard" page both read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["OUT", "build", "main"]

OUT = Path(__file__).resolve().parent / "dashboards" / "iapo.json"

DS = {"type": "prometheus", "uid": "${datasource}"}
TT = 'task=~"$task",tier=~"$tier"'
UP = 'upstream=~"$upstream"'
RI = "$__rate_interval"
BY = "task, tier"
LEGEND = "{{task}} / {{tier}}"

Panel = dict[str, Any]


def rate(metric: str, selector: str = TT, by: str = BY) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RI}]))"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/\n{denominator}"


def share(numerator: str, denominator: str) -> str:
    """``numerator / denominator``, 0 (not "No data") where the numerator has no series.

    The proxy creates a label set on its first event, so a task that never failed has
    no failure series at all; ``or 0 * denominator`` fills in a zero with its labels.
    """
    return ratio(f"(\n{numerator}\nor\n0 * {denominator}\n)", denominator)


def quantile(q: float, metric: str, selector: str = TT, by: str = BY) -> str:
    return f"histogram_quantile({q}, {rate(metric + '_bucket', selector, 'le, ' + by)})"


def mean(histogram: str, selector: str = TT, by: str = BY) -> str:
    return ratio(rate(histogram + "_sum", selector, by), rate(histogram + "_count", selector, by))


def signed_mean(histogram: str, selector: str = TT, by: str = BY) -> str:
    """The mean of a histogram whose buckets go below 0: prometheus_client exports no
    ``_sum`` for it, so the proxy keeps ``NAME_signed_sum_total`` by ``sign``."""
    sums = histogram + "_signed_sum_total"
    positive = rate(sums, selector + ',sign="positive"', by)
    negative = rate(sums, selector + ',sign="negative"', by)
    return ratio(f"(\n{positive}\n-\n{negative}\n)", rate(histogram + "_count", selector, by))


def target(expr: str, legend: str = LEGEND, ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


class Layout:
    """Places panels left to right in rows of 24 grid units and numbers them."""

    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": len(self.panels) + 1,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def add(self, panel: Panel, w: int = 12, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["datasource"] = DS
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def _newline(self) -> None:
        self.y += self.row_height
        self.x = 0
        self.row_height = 0


def timeseries(
    title: str, description: str, targets: list[dict[str, Any]], unit: str = "short"
) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"fillOpacity": 10, "showPoints": "never"}},
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title: str, description: str, expr: str, unit: str = "short") -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "targets": [target(expr, legend="")],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
    }


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _panels() -> list[Panel]:
    lay = Layout()
    requests = rate("iapo_requests_total")
    lay.row("Overview")
    lay.add(
        stat(
            "Requests / s",
            "Requests answered per second, all selected tasks and tiers.",
            f"sum(rate(iapo_requests_total{{{TT}}}[{RI}]))",
            "reqps",
        ),
        w=6,
        h=4,
    )
    lay.add(
        stat(
            "Error ratio (5xx)",
            "Share of requests that ended with a 5xx.",
            share(
                f'sum(rate(iapo_requests_total{{{TT},status_class="5xx"}}[{RI}]))',
                f"sum(rate(iapo_requests_total{{{TT}}}[{RI}]))",
            ),
            "percentunit",
        ),
        w=6,
        h=4,
    )
    lay.add(
        stat(
            "Cost / s",
            "Spend per second in the upstream price unit.",
            f"sum(rate(iapo_cost_total{{{TT}}}[{RI}]))",
        ),
        w=6,
        h=4,
    )
    lay.add(
        stat(
            "In flight",
            "Requests being served now, all replicas.",
            'sum(iapo_in_flight_requests{task=~"$task"})',
        ),
        w=6,
        h=4,
    )

    lay.row("Traffic")
    lay.add(
        timeseries(
            "Request rate",
            "Requests per second by task and tier (all outcomes).",
            [target(requests)],
            "reqps",
        )
    )
    lay.add(
        timeseries(
            "Requests by status class",
            "Requests per second by outcome; 4xx are client errors (unknown task or tier, "
            "bad body), 5xx are ours or the upstream's.",
            [
                target(
                    rate("iapo_requests_total", by=f"{BY}, status_class"),
                    legend=f"{LEGEND} {{{{status_class}}}}",
                )
            ],
            "reqps",
        )
    )
    lay.add(
        timeseries(
            "In-flight requests",
            "Requests being served now, summed over replicas.",
            [target('sum by (task) (iapo_in_flight_requests{task=~"$task"})', legend="{{task}}")],
        ),
        w=24,
        h=6,
    )

    lay.row("Latency")
    lay.add(
        timeseries(
            "End-to-end latency p50 / p95 / p99",
            "Time from request to response through the proxy, all N samples included.",
            [
                target(quantile(q, "iapo_request_duration_seconds"), f"p{p} {LEGEND}", ref)
                for q, p, ref in ((0.5, 50, "A"), (0.95, 95, "B"), (0.99, 99, "C"))
            ],
            "s",
        )
    )
    lay.add(
        timeseries(
            "Upstream call latency p50 / p95",
            "Latency of one upstream call (one sample, or one call with n samples).",
            [
                target(
                    quantile(q, "iapo_upstream_request_duration_seconds", UP, "upstream"),
                    f"p{p} {{{{upstream}}}}",
                    ref,
                )
                for q, p, ref in ((0.5, 50, "A"), (0.95, 95, "B"))
            ],
            "s",
        )
    )

    lay.row("Inference scale")
    lay.add(
        timeseries(
            "Samples per request",
            "Mean and p95 of the samples drawn per request (N after caps and early stopping).",
            [
                target(mean("iapo_samples_per_request"), f"mean {LEGEND}", "A"),
                target(quantile(0.95, "iapo_samples_per_request"), f"p95 {LEGEND}", "B"),
            ],
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Active policy N",
            "N of the active policy per task and tier (max over replicas).",
            [target(f"max by ({BY}) (iapo_policy_n{{{TT}}})")],
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Capped N and early stops",
            "Requests per second whose N a tier cap reduced, and majority votes decided "
            "before all N samples were drawn.",
            [
                target(rate("iapo_n_capped_total"), f"capped {LEGEND}", "A"),
                target(rate("iapo_early_stopped_total"), f"early stop {LEGEND}", "B"),
            ],
            "reqps",
        ),
        w=8,
    )

    lay.row("Early stopping")
    saved = rate("iapo_samples_saved_total")
    lay.add(
        timeseries(
            "Samples saved",
            "Share of the policy's N not drawn because the request stopped early: saved / "
            "(saved + drawn).",
            [target(ratio(saved, f"({saved}\n+\n{rate('iapo_samples_total')})"))],
            "percentunit",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Stop reason",
            "Requests per second by how their sampling stopped: full (all N), exact (the "
            "vote could not change), confident (the leader almost surely wins), threshold "
            "(Best-of-N: a reward reached the tier's threshold).",
            [
                target(
                    rate("iapo_vote_stops_total", by=f"{BY}, reason"),
                    f"{{{{reason}}}} {LEGEND}",
                )
            ],
            "reqps",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Waves per request",
            "Rounds of upstream calls per request: each round after the first is one more "
            "upstream round trip of latency.",
            [
                target(mean("iapo_sampling_waves"), f"mean {LEGEND}", "A"),
                target(quantile(0.95, "iapo_sampling_waves"), f"p95 {LEGEND}", "B"),
            ],
        ),
        w=8,
    )

    lay.row("Tokens and cost")
    tokens = f"{rate('iapo_prompt_tokens_total')}\n+\n{rate('iapo_completion_tokens_total')}"
    lay.add(
        timeseries(
            "Tokens per second",
            "Prompt and completion tokens billed by upstreams, per second.",
            [
                target(rate("iapo_prompt_tokens_total"), f"prompt {LEGEND}", "A"),
                target(rate("iapo_completion_tokens_total"), f"completion {LEGEND}", "B"),
            ],
        ),
        w=6,
    )
    lay.add(
        timeseries(
            "Tokens per request",
            "Prompt + completion tokens of all samples of one request, on average.",
            [target(ratio(f"(\n{tokens}\n)", requests))],
        ),
        w=6,
    )
    lay.add(
        timeseries(
            "Cost per second",
            "Spend per second in the upstream price unit.",
            [target(rate("iapo_cost_total"))],
        ),
        w=6,
    )
    lay.add(
        timeseries(
            "Cost per request",
            "Mean cost of one request (all its samples), in the upstream price unit.",
            [target(ratio(rate("iapo_cost_total"), requests))],
        ),
        w=6,
    )

    lay.row("Quality")
    lay.add(
        timeseries(
            "Vote agreement",
            "Share of samples that voted for the returned answer (majority vote); low "
            "agreement means the answer is uncertain.",
            [
                target(mean("iapo_vote_agreement"), f"mean {LEGEND}", "A"),
                target(quantile(0.1, "iapo_vote_agreement"), f"p10 {LEGEND}", "B"),
            ],
            "percentunit",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Reward score",
            "Weighted reward of the chosen sample (Best-of-N).",
            [
                target(signed_mean("iapo_reward_score"), f"mean {LEGEND}", "A"),
                target(quantile(0.5, "iapo_reward_score"), f"p50 {LEGEND}", "B"),
            ],
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Answer-extraction failures",
            "Share of samples whose answer the extractor could not find.",
            [target(share(rate("iapo_extraction_failures_total"), rate("iapo_samples_total")))],
            "percentunit",
        ),
        w=8,
    )

    lay.row("Upstreams")
    lay.add(
        timeseries(
            "Upstream errors by kind",
            "Failed upstream calls per second. 'cancelled' is expected with early stopping.",
            [
                target(
                    rate("iapo_upstream_errors_total", UP, "upstream, kind"),
                    "{{upstream}} {{kind}}",
                )
            ],
            "reqps",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Upstream calls by status class",
            "Upstream calls per second by response status class.",
            [
                target(
                    rate("iapo_upstream_requests_total", UP, "upstream, status_class"),
                    "{{upstream}} {{status_class}}",
                )
            ],
            "reqps",
        ),
        w=8,
    )
    circuit = timeseries(
        "Circuit breaker",
        "Worst state over replicas: 0 closed, 1 half-open, 2 open.",
        [target(f"max by (upstream) (iapo_circuit_state{{{UP}}})", "{{upstream}}")],
    )
    circuit["fieldConfig"]["defaults"]["mappings"] = [
        {
            "type": "value",
            "options": {
                "0": {"text": "closed", "color": "green"},
                "1": {"text": "half-open", "color": "orange"},
                "2": {"text": "open", "color": "red"},
            },
        }
    ]
    circuit["fieldConfig"]["defaults"]["min"] = 0
    circuit["fieldConfig"]["defaults"]["max"] = 2
    lay.add(circuit, w=8)

    lay.row("Active policy")
    policy = {
        "type": "table",
        "title": "Active policy per task and tier",
        "description": "What each tier serves now: prompt id, N, strategy and the policy digest "
        "(the x-iapo-policy header). Two rows for one tier mean replicas disagree.",
        "targets": [
            target(
                f"max by ({BY}, prompt, n, strategy, policy) (iapo_policy_info{{{TT}}})",
                legend="",
                format="table",
                instant=True,
            )
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}
        ],
    }
    lay.add(policy, w=24, h=7)
    return lay.panels


def build() -> dict[str, Any]:
    """The dashboard model."""
    return {
        "uid": "iapo-proxy",
        "title": "iapo proxy",
        "description": "Traffic, latency, inference scale, cost and quality of the iapo proxy, "
        "per task and budget tier, summed over replicas.",
        "tags": ["iapo", "llm"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                variable("task", "Task", "label_values(iapo_requests_total, task)"),
                variable("tier", "Tier", 'label_values(iapo_requests_total{task=~"$task"}, tier)'),
                variable(
                    "upstream", "Upstream", "label_values(iapo_upstream_requests_total, upstream)"
                ),
            ]
        },
        "panels": _panels(),
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard; ``--check`` only says whether the committed file is current."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run python deploy/grafana/build_dashboard.py")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
