from __future__ import annotations

import subprocess
import sys

import pytest

from iapo.cli import build_parser, main

SUBCOMMANDS = ["optimize", "simulate", "serve", "report", "demo"]


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
