"""``iapo optimize --replay`` on both kinds of generated table."""

from __future__ import annotations

from pathlib import Path

import pytest

from iapo.cli import main
from iapo.simulator import categorical_bon_table, majority_table, save_table
from policies.policy import load_policy
from policies.table import replay_prompt_texts


def _optimize(table: Path, out: Path, *extra: str) -> int:
    argv = ["optimize", "--replay", str(table), "--budget", "600", "--n-max", "8"]
    return main([*argv, "--seed", "2", "--quiet", "--out", str(out), *extra])


def test_a_best_of_n_table_gives_a_best_of_n_policy(tmp_path: Path) -> None:
    table = categorical_bon_table(3, prompts=4, queries=40, outcomes=5, objectives=2)
    save_table(table, tmp_path / "bon.npz")
    out = tmp_path / "policies" / "chat.json"
    tiers = "economy=1,helpful=0.2:helpfulness=1:harmlessness=0.2,premium=0"
    assert _optimize(tmp_path / "bon.npz", out, "--name", "chat", "--tiers", tiers) == 0
    policy = load_policy(out)
    assert policy.task == "chat"
    assert policy.budget.spent == 600
    assert policy.reward is not None
    assert policy.reward.objectives == ("helpfulness", "harmlessness")
    assert set(policy.tiers) == {"economy", "helpful", "premium"}
    for choice in policy.tiers.values():
        assert choice.strategy == "best_of_n"
        assert choice.prompt.text == replay_prompt_texts(table)[int(choice.prompt.id)]
    assert policy.tiers["helpful"].objective_weights == {"helpfulness": 1.0, "harmlessness": 0.2}
    assert policy.tiers["premium"].objective_weights is None  # equal weights


def test_a_majority_table_gives_a_boxed_majority_policy(tmp_path: Path) -> None:
    table = majority_table(3, prompts=4, queries=40)
    save_table(table, tmp_path / "maj-table.npz")
    out = tmp_path / "maj.json"
    assert _optimize(tmp_path / "maj-table.npz", out) == 0
    policy = load_policy(out)
    assert policy.task == "maj-table"  # the file name, as iapo simulate --replay names it
    assert policy.extractor is not None
    assert policy.extractor.kind == "boxed"
    assert {c.strategy for c in policy.tiers.values()} == {"majority"}
    assert policy.tiers["standard"].prompt.text in replay_prompt_texts(table)


def test_replay_arguments_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_table(majority_table(0, prompts=2, queries=10), tmp_path / "maj.npz")
    save_table(categorical_bon_table(0, prompts=2, queries=10), tmp_path / "bon.npz")
    out = tmp_path / "p.json"
    assert _optimize(tmp_path / "maj.npz", out, "--tiers", "a=1:helpfulness=1") == 2
    assert "objective weights in --tiers are for Best-of-N" in capsys.readouterr().err
    assert _optimize(tmp_path / "bon.npz", out, "--tiers", "a=1:honesty=1") == 2
    assert "unknown objectives ['honesty']" in capsys.readouterr().err
    assert _optimize(tmp_path / "bon.npz", out, "--name", "no spaces") == 2
    assert "a task name is" in capsys.readouterr().err
    assert not out.exists()
