from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from iapo.cli import main
from optimizer import load_estimates
from policies.policy import load_policy

from .conftest import deceiving_table, save_table


def test_optimize_replay_writes_a_policy_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = save_table(deceiving_table(), tmp_path / "deceive.npz")
    out = tmp_path / "policy.json"
    code = main(
        [
            "optimize",
            "--replay",
            str(table),
            "--budget",
            "2000",
            "--seed",
            "3",
            "--tiers",
            "economy=2.0,premium=0",
            "--n-max",
            "16",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "round 1" in printed  # the plan comes first
    assert "spent 2000 of 2000 samples" in printed
    assert "prompt-only would pick" in printed
    policy = load_policy(out)
    assert policy.task == "deceive"
    assert policy.budget.planned == policy.budget.spent == 2000
    assert set(policy.tiers) == {"economy", "premium"}
    assert policy.tiers["premium"].prompt.id == "1"
    lo, hi = policy.tiers["premium"].interval
    assert lo <= policy.tiers["premium"].expected_utility <= hi
    estimates = load_estimates(out)
    assert len(estimates.utility["premium"]["0"]) == 16

    svg = tmp_path / "report.svg"
    assert main(["report", str(out), "--out", str(svg)]) == 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = svg.read_text()
    assert "tier premium" in text
    assert f"at N={policy.tiers['premium'].n}," in text
    assert 'data-prompt="0"' in text  # the N=1 winner is drawn too


def test_optimize_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    table = save_table(deceiving_table(), tmp_path / "t.npz")
    args = ["optimize", "--replay", str(table), "--budget", "500", "--seed", "9", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.json")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.json")]) == 0
    a, b = load_policy(tmp_path / "a.json"), load_policy(tmp_path / "b.json")
    assert a.tiers == b.tiers


def test_bad_table_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, cat_probs=np.full((2, 3, 2), 0.5), answers=np.zeros(3, dtype=int))
    code = main(
        ["optimize", "--replay", str(path), "--budget", "10", "--out", str(tmp_path / "p.json")]
    )
    assert code == 2
    assert "cost_per_prompt" in capsys.readouterr().err


def test_report_without_estimates_says_where_they_come_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = save_table(deceiving_table(), tmp_path / "t.npz")
    out = tmp_path / "p.json"
    assert (
        main(["optimize", "--replay", str(table), "--budget", "100", "--quiet", "--out", str(out)])
        == 0
    )
    (tmp_path / "p.estimates.json").unlink()
    assert main(["report", str(out)]) == 2
    assert "written by 'iapo optimize'" in capsys.readouterr().err
