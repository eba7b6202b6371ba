from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policies import ConfigError, StopRule
from proxy.config import TierCaps, load_config, parse_config

UPSTREAM = {"name": "up", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}


def raw(**extra: Any) -> dict[str, Any]:
    return {"upstreams": [dict(UPSTREAM)], "auth": {"disabled": True}, **extra}


def test_minimal_config_has_safe_defaults() -> None:
    config = parse_config(raw(), env={})
    assert config.server.host == "127.0.0.1"
    assert config.passthrough is True
    assert config.request_log.log_content is False
    assert config.upstream(None).name == "up"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="serverr"):
        parse_config(raw(serverr={}), env={})
    with pytest.raises(ConfigError, match=r"deadline_sec"):
        parse_config(raw(server={"deadline_sec": 3}), env={})


@pytest.mark.parametrize("key", ["api_key", "token", "API_KEY"])
def test_secret_literal_in_upstream_is_refused(key: str) -> None:
    config = raw()
    config["upstreams"][0][key] = "sk-live-123"
    with pytest.raises(ConfigError, match="api_key_env") as excinfo:
        parse_config(config, env={})
    assert "sk-live-123" not in str(excinfo.value)


def test_auth_must_be_configured_or_explicitly_disabled() -> None:
    config = raw()
    config["auth"] = {}
    with pytest.raises(ConfigError, match="disabled = true"):
        parse_config(config, env={})
    assert parse_config({**config, "auth": {"keys_env": "K"}}, env={}).auth.keys_env == "K"
    with pytest.raises(ConfigError, match="64 hex"):
        parse_config({**config, "auth": {"key_sha256": ["abc"]}}, env={})


def test_cross_references_are_checked() -> None:
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        parse_config(
            raw(tasks=[{"name": "t", "policy_file": "p.json", "upstream": "nope"}]), env={}
        )
    with pytest.raises(ConfigError, match="no \\[store\\] path"):
        parse_config(raw(tasks=[{"name": "t"}]), env={})
    with pytest.raises(ConfigError, match="used twice"):
        parse_config(
            raw(
                tasks=[
                    {"name": "a", "policy_file": "a.json", "aliases": ["x"]},
                    {"name": "b", "policy_file": "b.json", "aliases": ["x"]},
                ]
            ),
            env={},
        )
    two = raw()
    two["upstreams"] = [dict(UPSTREAM), dict(UPSTREAM)]
    with pytest.raises(ConfigError, match="unique"):
        parse_config(two, env={})


def test_file_env_overrides_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "iapo.toml"
    path.write_text(
        '[auth]\ndisabled = true\n[[upstreams]]\nname = "up"\nbase_url = "http://h/v1"\n'
        'model = "m"\n[[tasks]]\nname = "math"\npolicy_file = "policies/math.json"\n'
        '[request_log]\npath = "log.sqlite"\n'
    )
    config = load_config(None, env={"IAPO_CONFIG": str(path), "IAPO_PORT": "9001"})
    assert config.server.port == 9001
    assert config.tasks[0].policy_file == str(tmp_path / "policies" / "math.json")
    assert config.request_log.path == str(tmp_path / "log.sqlite")
    with pytest.raises(ConfigError, match="IAPO_PORT"):
        load_config(path, env={"IAPO_PORT": "eighty"})
    with pytest.raises(ConfigError, match="IAPO_CONFIG"):
        load_config(None, env={})
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_deploy_configs_parse() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in (root / "deploy" / "iapo" / "config.toml", root / "deploy/kubernetes/config.toml"):
        if path.exists():
            config = load_config(path, env={})
            assert config.auth.keys_env == "IAPO_API_KEYS"


def tier_config(**tier: Any) -> dict[str, Any]:
    task = {"name": "t", "policy_file": "p.json", "tiers": {"economy": tier}}
    return raw(tasks=[task])


@pytest.mark.parametrize(
    ("tier", "message"),
    [
        (
            {"stop": "confident"},
            r"tasks\[t\].tiers.economy: confident stopping needs 0 < delta < 0.5 .* got None",
        ),
        ({"stop": "confident", "delta": 0.0}, r"0 < delta < 0.5 .* got 0.0"),
        ({"stop": "confident", "delta": 0.7}, r"0 < delta < 0.5 .* got 0.7"),
        ({"stop": "exact", "delta": 0.05}, r'delta is only read with stop = "confident"'),
        ({"delta": 0.05}, r'delta is only read with stop = "confident"'),
        ({"stop": "sometimes"}, r"Invalid enum value 'sometimes' - at .*\.stop"),
    ],
)
def test_a_bad_stopping_rule_is_refused_at_load(tier: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(tier_config(**tier), env={"IAPO_STORE": "s.sqlite"})


def test_a_tier_stopping_rule_overrides_the_tasks_early_stop() -> None:
    config = parse_config(tier_config(stop="confident", delta=0.05), env={"IAPO_STORE": "s.sqlite"})
    caps = config.tasks[0].tiers["economy"]
    assert caps.stop_rule(early_stop=False) == StopRule(kind="confident", delta=0.05)
    assert TierCaps().stop_rule(early_stop=True) == StopRule(kind="exact")
    assert TierCaps().stop_rule(early_stop=False) == StopRule(kind="full")
    # Silent config: the rule the policy priced the tier under, if it stops early.
    priced = StopRule(kind="confident", delta=0.1)
    assert TierCaps().stop_rule(early_stop=True, priced=priced) == priced
    assert TierCaps().stop_rule(early_stop=True, priced=StopRule()) == StopRule(kind="exact")
    assert caps.stop_rule(early_stop=False, priced=StopRule(kind="exact")) == StopRule(
        kind="confident", delta=0.05
    )
