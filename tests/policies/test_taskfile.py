from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from policies import ConfigError, ExtractorSpec, UpstreamSpec, load_dataset, load_task_file

TASK = """
[task]
name = "math"
extractor = { kind = "boxed" }
[[task.prompts]]
id = "plain"
text = "Answer in \\\\boxed{}."

[upstream]
base_url = "http://127.0.0.1:8000/v1"
model = "sim"
api_key_env = "IAPO_TEST_KEY"
price_per_1k_completion_tokens = 0.5

[dataset]
path = "math.jsonl"
"""


def test_task_file_loads_with_dataset_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "task.toml").write_text(TASK)
    task_file, dataset = load_task_file(tmp_path / "task.toml")
    assert task_file.task.prompts[0].text == "Answer in \\boxed{}."
    assert task_file.upstream.chat_url == "http://127.0.0.1:8000/v1/chat/completions"
    assert task_file.upstream.cost(prompt_tokens=100, completion_tokens=200) == pytest.approx(0.1)
    assert dataset == tmp_path / "math.jsonl"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('model = "sim"', 'model = "sim"\ncolour = 1'), "colour"),
        (lambda t: t.replace('base_url = "http', 'base_url = "ftp'), "http"),
        (lambda t: t.replace("[dataset]", "[data]"), "unknown field `data`"),
        (lambda t: t.replace('name = "math"', "name = 3"), "$.task.name"),
        (lambda t: t + "\n[[[", "not valid TOML"),
    ],
)
def test_bad_task_file_names_the_key(
    tmp_path: Path, edit: Callable[[str], str], message: str
) -> None:
    (tmp_path / "task.toml").write_text(edit(TASK))
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        load_task_file(tmp_path / "task.toml")


def test_dataset_normalises_gold_like_the_extractor(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"question": "q1", "answer": "1,000.0"}\n\n'
        '{"question": "q2", "answer": "(c)", "id": "x"}\n'
    )
    rows = load_dataset(path, ExtractorSpec(kind="last_number"))
    assert [(r.id, r.answer) for r in rows] == [("1", "1000"), ("x", "(c)")]
    letters = load_dataset(path, ExtractorSpec(kind="option_letter"), limit=2)
    assert letters[1].answer == "C"
    assert len(load_dataset(path, None, limit=1)) == 1


def test_dataset_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "q1", "answer": "1"}\n{"question": "q2"}\n')
    with pytest.raises(ConfigError, match=r"d.jsonl:2: a majority-vote task needs a gold"):
        load_dataset(path, ExtractorSpec())
    path.write_text('{"question": 5}\n')
    with pytest.raises(ConfigError, match=r"d.jsonl:1"):
        load_dataset(path, None)
    path.write_text("")
    with pytest.raises(ConfigError, match="no questions"):
        load_dataset(path, None)


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = UpstreamSpec(base_url="http://x/v1", model="m", api_key_env="IAPO_TEST_KEY")
    monkeypatch.delenv("IAPO_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="IAPO_TEST_KEY is not set"):
        spec.api_key()
    monkeypatch.setenv("IAPO_TEST_KEY", "sk-test")
    assert spec.api_key() == "sk-test"
    monkeypatch.setenv("IAPO_TEST_KEY", "sk-test\n")  # a mounted secret file's newline
    assert spec.api_key() == "sk-test"
    monkeypatch.setenv("IAPO_TEST_KEY", "sk-test\r\nx-injected: 1")
    with pytest.raises(ConfigError, match="control characters"):
        spec.api_key()
    assert UpstreamSpec(base_url="http://x/v1", model="m").api_key() is None
