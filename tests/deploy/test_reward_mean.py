"""The dashboard's "Reward score (mean)" query computes the mean of the scores the proxy
observed, negative ones included, evaluated by promtool on series taken from the proxy's
real exposition (prometheus_client exports no ``_sum`` for this histogram)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import ProxyMetrics
from tests.deploy.promql import GRAFANA_VALUES, dashboard_targets, run_promtool, substitute

SCORES = (-1.0, 0.5, 2.0, -0.25)  # observed once a minute each, on two replicas


def _series_per_minute() -> list[tuple[str, float]]:
    """(series selector, increase per minute) from one minute of the proxy's metrics."""
    metrics = ProxyMetrics()
    for score in SCORES:
        metrics.observe_reward("math", "standard", score)
    text = metrics.render().decode()
    out = []
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("iapo_reward_score"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out.append((f"{sample.name}{{{labels}}}", sample.value))
    return out


def test_exposition_has_no_reward_sum_but_the_signed_sums() -> None:
    names = {name.split("{")[0] for name, _ in _series_per_minute()}
    assert "iapo_reward_score_sum" not in names
    assert "iapo_reward_score_signed_sum_total" in names


@pytest.mark.prometheus
def test_dashboard_mean_is_the_mean_of_observed_scores(
    promtool_path: str, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    (expr,) = [e for title, ref, e in dashboard_targets(dashboard) if title == "Reward score"][:1]
    values = {**GRAFANA_VALUES, "task": "math", "tier": "standard", "__rate_interval": "5m"}
    series = [
        {"series": name[:-1] + f',instance="{replica}"}}', "values": f"0+{per_minute}x20"}
        for name, per_minute in _series_per_minute()
        for replica in ("a", "b")
    ]
    mean = sum(SCORES) / len(SCORES)
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        # 1 where the dashboard's mean is the scores' mean (to rounding)
                        "expr": f"abs(({substitute(expr, values)}) - {mean}) < bool 1e-9",
                        "eval_time": "15m",
                        "exp_samples": [{"labels": '{task="math",tier="standard"}', "value": 1}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "mean_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = run_promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
