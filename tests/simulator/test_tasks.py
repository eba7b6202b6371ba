from __future__ import annotations

from pathlib import Path

import pytest

from iapo.cli import main
from iapo.simulator import Simulator, write_proxy_config, write_tasks
from policies.errors import ConfigError
from policies.taskfile import load_dataset, load_task_file
from proxy.config import load_config


def test_written_task_files_load_and_point_at_the_simulator(
    simulator: Simulator, tmp_path: Path
) -> None:
    written = write_tasks(simulator, tmp_path, "http://127.0.0.1:1234")
    assert [t.spec.name for t in written] == ["math", "assist"]
    for task in written:
        task_file, dataset = load_task_file(task.task_file)
        assert task_file.task == task.spec
        assert task_file.upstream.base_url == "http://127.0.0.1:1234/v1"
        assert dataset == task.train
    math_file, math_data = load_task_file(written[0].task_file)
    rows = load_dataset(math_data, math_file.task.extractor)
    assert len(rows) == 150
    assert rows[4].answer == simulator.gold_answer("train", 4)
    assert rows[4].question == simulator.questions["train"][4]
    assert written[0].test is not None
    assert len(load_dataset(written[0].test, math_file.task.extractor)) == 100
    assist_file, assist_data = load_task_file(written[1].task_file)
    assert assist_file.task.strategy == "best_of_n"
    assert assist_file.task.reward is not None
    assert assist_file.task.reward.url == "http://127.0.0.1:1234/v1/reward"
    assert len(load_dataset(assist_data, None)) == 120


def test_proxy_config_serves_every_written_task(simulator: Simulator, tmp_path: Path) -> None:
    from proxy.config import load_config

    tasks = write_tasks(simulator, tmp_path, "http://127.0.0.1:4321")
    config = load_config(write_proxy_config(tmp_path, "http://127.0.0.1:4321", tasks), env={})
    assert [t.name for t in config.tasks] == ["math", "assist"]
    assert config.tasks[0].policy_file == str(tmp_path / "policies" / "math.json")
    assert config.upstreams[0].base_url == "http://127.0.0.1:4321/v1"
    assert config.upstreams[0].price_per_1k_completion_tokens == 0.01
    # what the README's snippet needs: the math-solver alias, keys from IAPO_API_KEYS
    assert config.tasks[0].aliases == ("math-solver",)
    assert config.auth.keys_env == "IAPO_API_KEYS"
    assert not config.auth.disabled
    assert config.passthrough


def test_task_files_are_toml_even_for_text_that_needs_escaping(tmp_path: Path) -> None:
    import tomllib

    from iapo.simulator.tasks import _dumps

    document = {"task": {"name": "m", "key with space": '𝔸 \\boxed{} "q"\n', "none": None}}
    assert tomllib.loads(_dumps(document)) == {
        "task": {"name": "m", "key with space": '𝔸 \\boxed{} "q"\n'}
    }


def test_task_file_early_stop_is_refused_with_where_it_belongs(
    simulator: Simulator, tmp_path: Path
) -> None:
    task_file = write_tasks(simulator, tmp_path, "http://h:1")[0].task_file
    assert "early_stop" not in task_file.read_text()
    text = task_file.read_text().replace("[task]\n", "[task]\nearly_stop = true\n", 1)
    task_file.write_text(text)
    with pytest.raises(ConfigError, match=r"early_stop .*\[\[tasks\]\]"):
        load_task_file(task_file)


def test_priced_usage_equals_the_table_cost(simulator: Simulator, tmp_path: Path) -> None:
    task_file, _ = load_task_file(write_tasks(simulator, tmp_path, "http://h:1")[0].task_file)
    for prompt, candidate in enumerate(task_file.task.prompts):
        completion = simulator.complete(candidate.render(simulator.questions["train"][0]), n=3)
        cost = task_file.upstream.cost(completion.prompt_tokens, completion.completion_tokens)
        assert cost == pytest.approx(3 * simulator.majority.cost_per_prompt[prompt], rel=1e-9)


def test_cli_writes_tasks_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "simulate",
            "--port",
            "8999",
            "--write-task",
            str(tmp_path / "tasks"),
            "--write-only",
            "--write-table",
            str(tmp_path / "table.npz"),
        ]
    )
    assert code == 0
    assert (tmp_path / "table.npz").exists()
    task_file, _ = load_task_file(tmp_path / "tasks" / "math.toml")
    assert task_file.upstream.base_url == "http://127.0.0.1:8999/v1"
    out = capsys.readouterr().out
    assert "assist.toml" in out
    assert "proxy.toml" in out


def test_cli_write_task_for_a_replayed_table_serves_that_task_alone(tmp_path: Path) -> None:
    from iapo.simulator import categorical_bon_table, save_table

    save_table(categorical_bon_table(0, prompts=3, queries=8), tmp_path / "t.npz")
    argv = ["simulate", "--replay", str(tmp_path / "t.npz"), "--name", "chat", "--port", "8999"]
    assert main([*argv, "--write-task", str(tmp_path / "sim"), "--write-only"]) == 0
    text = (tmp_path / "sim" / "proxy.toml").read_text()
    assert f"iapo optimize --replay {tmp_path / 't.npz'} --name chat" in text
    config = load_config(tmp_path / "sim" / "proxy.toml", env={})
    assert [t.name for t in config.tasks] == ["chat"]
    task_file, _ = load_task_file(tmp_path / "sim" / "chat.toml")
    assert task_file.task.strategy == "best_of_n"
    assert main(["simulate", "--name", "chat", "--write-task", str(tmp_path), "--write-only"]) == 2


def test_cli_write_only_needs_a_directory() -> None:
    from iapo.commands import simulate

    args = simulate_args(write_only=True)
    with pytest.raises(ConfigError, match="--write-task"):
        simulate.run(args)


def simulate_args(**overrides: object) -> object:
    """The parsed arguments of ``iapo simulate --port 0`` (the real parser's defaults)."""
    from iapo.cli import build_parser

    args = build_parser().parse_args(["simulate", "--port", "0"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
