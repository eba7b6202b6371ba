"""The fault kinds of ``python -m iapo.testing``: listed in its help, and an unknown kind is
an error (on the command line and in a request), never a silent normal answer."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from iapo.testing import FAULT_HELP, FAULT_KINDS, FaultUpstream, UnknownFault, parse_fault

CHAT = {"model": "m", "messages": [{"role": "user", "content": "what is six times seven?"}]}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iapo.testing", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_help_lists_every_fault_kind() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert set(FAULT_HELP) == set(FAULT_KINDS)
    listed = result.stdout.split("fault kinds:", 1)[1]
    for kind, text in FAULT_HELP.items():
        assert f"  {kind:<10} {text}" in listed


def test_unknown_kind_on_the_command_line_is_a_usage_error() -> None:
    result = run_cli("--script", "ok,bogus")
    assert result.returncode == 2
    assert "unknown fault kind 'bogus'" in result.stderr
    assert "listening" not in result.stdout


def test_parse_fault_names_the_valid_kinds() -> None:
    assert parse_fault("reset") == "reset"
    with pytest.raises(UnknownFault, match="kinds: ok, spike"):
        parse_fault("resett")


async def test_unknown_kind_in_a_request_is_answered_400() -> None:
    marked = {"model": "m", "messages": [{"role": "user", "content": "x [[fault:bogus]] y"}]}
    async with (
        FaultUpstream() as upstream,
        httpx.AsyncClient(base_url=upstream.base_url, timeout=5) as client,
    ):
        by_marker = await client.post("/chat/completions", json=marked)
        by_header = await client.post("/chat/completions", json=CHAT, headers={"x-fault": "nope"})
        healthy = await client.post("/chat/completions", json=CHAT)
    assert by_marker.status_code == 400
    assert "unknown fault kind 'bogus'" in by_marker.json()["error"]["message"]
    assert by_header.status_code == 400
    assert "'nope'" in by_header.json()["error"]["message"]
    assert healthy.status_code == 200
    assert upstream.stats.bad_requests == 2
