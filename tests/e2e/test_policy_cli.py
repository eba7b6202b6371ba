"""``iapo policy`` against the SQLite store, and a running proxy picking its changes up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import openai
import pytest

from iapo.cli import main
from iapo.testing import free_port, wait_ready
from policies import save_policy
from tests.e2e.conftest import proxy_server, upstream_server, wait_until
from tests.proxy.conftest import make_config, make_policy
from tests.proxy.scripted import ScriptedUpstream


def policy_files(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "v1.json", tmp_path / "v2.json"
    save_policy(make_policy(ns={"economy": 1, "standard": 2}), first)
    save_policy(make_policy(ns={"economy": 1, "standard": 4}), second)
    return first, second


def policy(store: Path, *args: str) -> int:
    return main(["policy", "--store", str(store), *args])


def test_put_list_show_activate_diff_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.sqlite"
    first, second = policy_files(tmp_path)
    assert policy(store, "put", str(first)) == 0
    assert policy(store, "put", str(second), "--no-activate") == 0
    out = capsys.readouterr().out
    assert "stored math@1/" in out
    assert "(active)" in out
    assert "stored math@2/" in out
    assert "(not active)" in out

    assert policy(store, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[:8] for line in lines] == ["  math@2", "* math@1"]
    assert "standard=p-sys@N4" in lines[0]

    assert policy(store, "show", "math") == 0
    assert json.loads(capsys.readouterr().out)["tiers"]["standard"]["n"] == 2
    assert policy(store, "show", "2") == 0  # one task in the store: N alone will do
    assert json.loads(capsys.readouterr().out)["tiers"]["standard"]["n"] == 4

    assert policy(store, "diff", "math@1", "math@2") == 0
    diff = capsys.readouterr().out.splitlines()
    assert diff[0].startswith("--- math@1/")
    assert "tiers.standard.n: 2 -> 4" in diff

    assert policy(store, "activate", "math@2") == 0
    assert capsys.readouterr().out.startswith("active: math@2/")
    assert policy(store, "rollback") == 0
    assert "math@2/" in capsys.readouterr().out
    assert policy(store, "show", "math") == 0
    assert json.loads(capsys.readouterr().out)["tiers"]["standard"]["n"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["activate", "math@9"], "no policy revision 9 for task 'math'"),
        (["activate", "math#2"], "is not a revision"),
        (["diff", "math@1", "other@1"], "no policy revision 1 for task 'other'"),
        (["rollback"], "is the oldest revision"),
        (["show", "other"], "task 'other' has no active policy"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    store = tmp_path / "store.sqlite"
    assert policy(store, "put", str(policy_files(tmp_path)[0])) == 0
    capsys.readouterr()
    assert policy(store, *args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_bad_policy_file_and_missing_store_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": "math"}')
    assert policy(tmp_path / "store.sqlite", "put", str(bad)) == 2
    assert "invalid policy" in capsys.readouterr().err
    assert policy(tmp_path / "absent.sqlite", "list") == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.delenv("IAPO_STORE", raising=False)
    assert main(["policy", "list"]) == 2
    assert "IAPO_STORE" in capsys.readouterr().err


def test_a_running_proxy_serves_what_policy_commands_activate(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    first, second = policy_files(tmp_path)
    assert policy(store, "put", str(first)) == 0
    with upstream_server(ScriptedUpstream(["so 12"])) as up_url:
        config = make_config(
            tmp_path,
            base_url=up_url + "/v1",
            task={"policy_file": None},
            extra={"store": {"path": str(store), "poll_interval_s": 0.02}},
        )
        with proxy_server(config) as proxy, httpx.Client(base_url=proxy.v1) as client:

            def served() -> tuple[str, str]:
                response = client.post(
                    "/chat/completions",
                    json={"model": "math", "messages": [{"role": "user", "content": "6+6?"}]},
                    headers={"X-IAPO-Task": "math", "X-IAPO-Tier": "standard"},
                )
                assert response.status_code == 200, response.text
                return response.headers["x-iapo-policy"], response.headers["x-iapo-samples"]

            assert served()[0].startswith("1/")
            assert policy(store, "put", str(second)) == 0
            assert wait_until(lambda: served() == (f"2/{_digest(second)}", "4/4"))
            assert policy(store, "rollback", "math") == 0
            assert wait_until(lambda: served() == (f"1/{_digest(first)}", "2/2"))


def _digest(path: Path) -> str:
    from policies import Policy

    return msgspec.json.decode(path.read_bytes(), type=Policy).digest


def test_iapo_serve_process_picks_up_policy_commands(tmp_path: Path) -> None:
    """The issue's done-when: a revision round-trips while ``iapo serve`` runs."""
    store = tmp_path / "store.sqlite"
    first, second = policy_files(tmp_path)
    assert policy(store, "put", str(first)) == 0
    with upstream_server(ScriptedUpstream(["so 12"])) as up_url:
        port = free_port()
        config = tmp_path / "proxy.toml"
        config.write_text(
            f'[server]\nport = {port}\n[auth]\nkeys_env = "IAPO_API_KEYS"\n'
            f'[store]\npath = "{store}"\npoll_interval_s = 0.1\n'
            f'[[upstreams]]\nname = "up"\nbase_url = "{up_url}/v1"\nmodel = "up-model"\n'
            '[[tasks]]\nname = "math"\n'
        )
        env = {**os.environ, "IAPO_API_KEYS": "sk-k"}
        log = (tmp_path / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "iapo", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(f"{url}/readyz", proc=proc)
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-k", max_retries=0)

            def served() -> str:
                raw = client.chat.completions.with_raw_response.create(
                    model="math",
                    messages=[{"role": "user", "content": "6 + 6?"}],
                    extra_headers={"X-IAPO-Tier": "standard"},
                )
                return raw.headers["x-iapo-policy"]

            assert served() == f"1/{_digest(first)}"
            assert policy(store, "put", str(second)) == 0
            assert wait_until(lambda: served() == f"2/{_digest(second)}")
            assert policy(store, "rollback") == 0
            assert wait_until(lambda: served() == f"1/{_digest(first)}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            log.close()
