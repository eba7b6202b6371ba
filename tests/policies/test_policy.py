from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from policies import (
    BudgetSpent,
    ConfigError,
    ExtractorSpec,
    Policy,
    PolicyError,
    PromptCandidate,
    StopRule,
    TaskSpec,
    Tier,
    TierPolicy,
    decode_policy,
    encode_policy,
    load_policy,
    parse_tiers,
    save_policy,
)


def make_policy(task: str = "math", n_premium: int = 16) -> Policy:
    def choice(prompt_id: str, n: int, weight: float) -> TierPolicy:
        return TierPolicy(
            prompt=PromptCandidate(prompt_id, f"You are prompt {prompt_id}. Box the answer."),
            n=n,
            strategy="majority",
            expected_utility=0.8 - weight * 0.01 * n,
            interval=(0.7, 0.9),
            cost_weight=weight,
        )

    return Policy(
        task=task,
        created_at=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        budget=BudgetSpent(planned=1000, spent=998),
        tiers={
            "economy": choice("3", 1, 1.0),
            "standard": choice("8", 4, 0.2),
            "premium": choice("8", n_premium, 0.0),
        },
        extractor=ExtractorSpec(kind="boxed"),
        seed=7,
        generator={"iapo": "0.1.0"},
    )


def test_policy_round_trips_through_json(tmp_path: Path) -> None:
    policy = make_policy()
    path = tmp_path / "out" / "math.json"
    save_policy(policy, path)
    assert load_policy(path) == policy
    assert decode_policy(encode_policy(policy)) == policy
    assert policy.default == "standard"
    assert len(policy.digest) == 12
    assert make_policy(n_premium=32).digest != policy.digest
    raw = json.loads(path.read_text())
    for field in ("version", "task", "created_at", "budget", "tiers"):
        assert field in raw
    assert raw["tiers"]["premium"]["prompt"] == {
        "id": "8",
        "text": policy.tiers["premium"].prompt.text,
        "role": "system",
    }
    assert raw["budget"] == {"planned": 1000, "spent": 998}


def test_unknown_future_fields_do_not_break_reader() -> None:
    raw = json.loads(encode_policy(make_policy()))
    raw["version"] = 2
    raw["shiny_new_thing"] = {"x": 1}
    raw["tiers"]["economy"]["calibration"] = [0.1, 0.2]
    assert decode_policy(json.dumps(raw)).tiers["economy"].n == 1


def _mutate(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("tiers.standard.n", 0, "$.tiers.standard.n"),
        ("tiers.standard.n", "four", "$.tiers.standard.n"),
        ("tiers.economy.strategy", "vote", "$.tiers.economy.strategy"),
        ("tiers.premium.prompt", _DELETE, "prompt"),
        ("tiers.premium.interval", [0.9, 0.1], "lo > hi"),
        ("budget.spent", -1, "$.budget.spent"),
        ("task", "", "$.task"),
        ("created_at", "yesterday", "$.created_at"),
        ("tiers", {}, "at least one tier"),
        ("default_tier", "gold", "default_tier 'gold'"),
        ("tiers.economy.strategy", "best_of_n", "no 'reward'"),
    ],
)
def test_malformed_policy_is_rejected_naming_the_problem(path: str, value: Any, named: str) -> None:
    raw = json.loads(encode_policy(make_policy()))
    _mutate(raw, path, value)
    with pytest.raises(PolicyError) as excinfo:
        decode_policy(json.dumps(raw), source="bad.json")
    assert named in str(excinfo.value)
    assert "bad.json" in str(excinfo.value)


def test_not_json_and_missing_file_are_policy_errors(tmp_path: Path) -> None:
    half = encode_policy(make_policy())[:100]
    with pytest.raises(PolicyError, match="not valid JSON"):
        decode_policy(half)
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "absent.json")


def test_newer_writer_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    raw = json.loads(encode_policy(make_policy()))
    raw["generator"]["iapo"] = "9.9.0"
    with caplog.at_level(logging.WARNING, logger="policies.policy"):
        decode_policy(json.dumps(raw))
    assert "iapo 9.9.0" in caplog.text


def test_tier_policy_carries_its_tier() -> None:
    tier = make_policy().tiers["standard"].tier("standard")
    assert tier == Tier("standard", cost_weight=0.2)


def test_parse_tiers() -> None:
    tiers = parse_tiers("economy=1.0, standard=0.2,premium=0")
    assert [(t.name, t.cost_weight) for t in tiers] == [
        ("economy", 1.0),
        ("standard", 0.2),
        ("premium", 0.0),
    ]
    for bad, message in [
        ("economy", "NAME=COST_WEIGHT"),
        ("economy=cheap", "not a number"),
        ("a=1,a=2", "given twice"),
        ("a=-1", "a"),
        ("", "no tiers"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_tiers(bad)


def test_parse_tiers_with_objective_weights() -> None:
    tiers = parse_tiers("economy=1, helpful=0.2:helpfulness=1:harmlessness=0.2")
    assert tiers[0] == Tier("economy", cost_weight=1.0)
    assert tiers[1] == Tier(
        "helpful", cost_weight=0.2, objective_weights={"helpfulness": 1.0, "harmlessness": 0.2}
    )
    for bad, message in [
        ("a=1:helpfulness", "is not OBJECTIVE=WEIGHT"),
        ("a=1:=2", "is not OBJECTIVE=WEIGHT"),
        ("a=1:h=x", "weight of 'h' 'x' is not a number"),
        ("a=1:h=1:h=2", "weighted twice"),
        ("a=1:h=inf", "must be finite"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_tiers(bad)


def test_parse_tiers_with_stopping_rules() -> None:
    tiers = parse_tiers("economy=1:stop=exact, standard=0.2:stop=confident:delta=0.05,premium=0")
    assert [t.stop_rule for t in tiers] == [
        StopRule(kind="exact"),
        StopRule(kind="confident", delta=0.05),
        StopRule(kind="full"),
    ]
    helpful = parse_tiers("helpful=0.2:helpfulness=1:stop=threshold")[0]
    assert helpful.objective_weights == {"helpfulness": 1.0}
    assert helpful.stop == "threshold"
    for bad, message in [
        ("a=1:stop=confident", r"^tier 'a': confident stopping needs 0 < delta"),
        ("a=1:stop=exact:delta=0.1", "delta is only for"),
        ("a=1:stop=sometimes", "sometimes"),
        ("a=1:stop=exact:stop=full", "stop is given twice"),
        ("a=1:stop=confident:delta=x", "delta 'x' is not a number"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_tiers(bad)


def test_a_tiers_stopping_rule_must_fit_the_strategy() -> None:
    prompts = [{"id": "a", "text": "Solve it."}]
    reward = {"url": "http://rm/score", "objectives": ["help"]}
    for raw, message in [
        ({"tiers": [{"name": "standard", "stop": "threshold"}]}, "'threshold' is not for majority"),
        (
            {
                "strategy": "best_of_n",
                "reward": reward,
                "tiers": [{"name": "standard", "stop": "exact"}],
            },
            "'exact' is not for best_of_n",
        ),
    ]:
        with pytest.raises(msgspec.ValidationError, match=message):
            msgspec.convert({"name": "t", "prompts": prompts, **raw}, TaskSpec)
    choice = make_policy().tiers["standard"]
    with pytest.raises(ValueError, match="threshold is given exactly when"):
        msgspec.structs.replace(choice, threshold=0.5)
    with pytest.raises(ValueError, match="more than n=4"):
        msgspec.structs.replace(choice, expected_samples=5.0)
    priced = msgspec.structs.replace(choice, stop="exact", expected_samples=2.5)
    assert priced.tier("standard").stop_rule == StopRule(kind="exact")
    assert decode_policy(encode_policy(make_policy())).tiers["standard"].stop == "full"


def test_task_spec_validation_names_the_problem() -> None:
    prompts = [{"id": "a", "text": "Solve it."}]
    good = msgspec.convert({"name": "math", "prompts": prompts}, TaskSpec)
    assert good.tier("standard").cost_weight == 0.2
    assert good.prompt("a").text == "Solve it."
    cases = [
        ({"name": "math", "prompts": []}, "no prompts"),
        ({"name": "math", "prompts": prompts * 2}, "unique"),
        ({"name": "math", "prompts": prompts, "default_tier": "gold"}, "default_tier 'gold'"),
        ({"name": "math", "prompts": prompts, "strategy": "best_of_n"}, "needs a 'reward'"),
        ({"name": "math", "prompts": prompts, "colour": "red"}, "colour"),
        (
            {"name": "math", "prompts": [{"id": "t", "text": "no slot", "role": "template"}]},
            "{question}",
        ),
        (
            {
                "name": "chat",
                "prompts": prompts,
                "strategy": "best_of_n",
                "reward": {"url": "http://rm/score", "objectives": ["help"]},
                "tiers": [{"name": "standard", "objective_weights": {"harm": 1.0}}],
            },
            "unknown objectives",
        ),
    ]
    for raw, message in cases:
        with pytest.raises(msgspec.ValidationError, match=message):
            msgspec.convert(raw, TaskSpec)


def test_prompts_apply_to_client_messages() -> None:
    system = PromptCandidate("s", "Think step by step.")
    sent = system.apply(
        [{"role": "system", "content": "client system"}, {"role": "user", "content": "2+2?"}]
    )
    assert sent == [
        {"role": "system", "content": "Think step by step."},
        {"role": "user", "content": "2+2?"},
    ]
    template = PromptCandidate("t", "Solve \\boxed{} style: {question}\nAnswer:", role="template")
    messages = [{"role": "user", "content": [{"type": "text", "text": "x^{2}=4"}]}]
    assert template.apply(messages)[-1]["content"] == "Solve \\boxed{} style: x^{2}=4\nAnswer:"
    assert messages[0]["content"] == [{"type": "text", "text": "x^{2}=4"}], "input not mutated"
    assert template.render("1+1")[0] == {
        "role": "user",
        "content": "Solve \\boxed{} style: 1+1\nAnswer:",
    }
