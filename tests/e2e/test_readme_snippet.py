"""The README's "Point your app at it" snippet, run as written against what
``iapo simulate --write-task`` writes and ``iapo optimize --task`` produces."""

from __future__ import annotations

import contextlib
import io
import re
import socket
from pathlib import Path

import openai
import pytest

from iapo.cli import main
from iapo.simulator import create_app, make_simulator
from policies import SamplingSettings, load_policy
from proxy.config import load_config
from tests.e2e.conftest import proxy_server, upstream_server

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "sk-your-proxy-key"


def readme_snippet() -> str:
    section = README.read_text().split("## Point your app at it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None
    return match.group(1)


def test_readme_snippet_works_against_the_written_proxy_config(tmp_path: Path) -> None:
    snippet = readme_snippet()
    assert 'base_url="http://127.0.0.1:8080/v1"' in snippet
    with upstream_server(create_app(make_simulator())) as sim_url:
        port = sim_url.rsplit(":", 1)[1]
        work = tmp_path / "sim"
        assert main(["simulate", "--port", port, "--write-task", str(work), "--write-only"]) == 0
        for task in ("math", "assist"):
            args = ["optimize", "--task", str(work / f"{task}.toml"), "--budget", "200"]
            out = work / "policies" / f"{task}.json"
            assert main([*args, "--quiet", "--out", str(out)]) == 0
            # the temperature the samples were drawn at is recorded with the arms
            assert load_policy(out).sampling == SamplingSettings(temperature=0.7)
        env = {"IAPO_API_KEYS": KEY}
        config = load_config(work / "proxy.toml", env=env)
        assert config.server.port == 8080
        with proxy_server(config, env=env) as proxy:
            out = io.StringIO()
            namespace: dict[str, object] = {}
            with contextlib.redirect_stdout(out):
                exec(snippet.replace("http://127.0.0.1:8080", proxy.url), namespace)
            snippet_client = namespace["client"]
            assert isinstance(snippet_client, openai.OpenAI)
            snippet_client.close()  # its kept-alive connection must not outlive the proxy
            assert re.search(r"\\boxed\{.+\}", out.getvalue())
            with (
                openai.OpenAI(base_url=proxy.v1, api_key="sk-wrong", max_retries=0) as client,
                pytest.raises(openai.AuthenticationError),
            ):
                client.chat.completions.create(
                    model="math-solver", messages=[{"role": "user", "content": "1 + 1?"}]
                )


def test_serve_reports_a_port_in_use_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.toml"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config.write_text(
            '[auth]\ndisabled = true\n[[upstreams]]\nbase_url = "http://127.0.0.1:9/v1"\n'
            f'model = "m"\n[server]\nport = {port}\n'
        )
        assert main(["serve", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "listening on" not in captured.out
    assert captured.err.count("\n") == 1
    assert f"127.0.0.1:{port} is already in use" in captured.err
