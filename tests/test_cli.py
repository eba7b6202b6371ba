from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from iapo.cli import build_parser, exit_code, main
from policies import SamplingError, StoreError, UpstreamTimeout

SUBCOMMANDS = ["optimize", "simulate", "serve", "policy", "report", "demo"]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main([name, "--help"])
    assert excinfo.value.code == 0
    assert f"usage: iapo {name}" in capsys.readouterr().out


def test_parser_lists_all_subcommands() -> None:
    help_text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in help_text


def test_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iapo", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "optimize" in result.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.strip() == f"iapo {metadata.version('iapo')}"


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["optimize", "--budget", "not-a-number"])
    assert excinfo.value.code == 2
    config = tmp_path / "proxy.toml"
    config.write_text("[server]\nportt = 1\n")
    assert main(["serve", "--config", str(config), "--check"]) == 2
    assert "portt" in capsys.readouterr().err


def test_runtime_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(StoreError("database is locked")) == 1
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["simulate", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"iapo simulate: error: cannot listen on 127.0.0.1:{port}")
    assert err.count("\n") == 1


def test_unreachable_upstream_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "q.jsonl").write_text('{"question": "1 + 1?", "answer": "2"}\n')
    (tmp_path / "task.toml").write_text(
        '[task]\nname = "t"\n[[task.prompts]]\nid = "p"\ntext = "Answer."\n'
        f'[upstream]\nbase_url = "http://127.0.0.1:{port}/v1"\nmodel = "m"\nmax_retries = 0\n'
        '[dataset]\npath = "q.jsonl"\n'
    )
    out = tmp_path / "p.json"
    args = ["optimize", "--task", str(tmp_path / "task.toml"), "--budget", "4", "--quiet"]
    assert main([*args, "--out", str(out)]) == 3
    assert "cannot connect" in capsys.readouterr().err
    assert exit_code(SamplingError("gave up")) == 1
    wrapped = SamplingError("gave up")
    wrapped.__cause__ = UpstreamTimeout("timed out")
    assert exit_code(wrapped) == 3
