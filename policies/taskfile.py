"""Task files for live optimisation: the task, its upstream and its dataset.

A task file is TOML::

    [task]                      # a TaskSpec: name, prompts, strategy, extractor, tiers...
    name = "math"
    strategy = "majority"
    extractor = { kind = "boxed" }
    [[task.prompts]]
    id = "step-by-step"
    text = "Think step by step and put the final answer in \\boxed{}."

    [upstream]                  # an UpstreamSpec
    base_url = "http://127.0.0.1:8000/v1"
    model = "meta-llama/Llama-3.3-70B-Instruct"
    api_key_env = "OPENAI_API_KEY"

    [dataset]
    path = "math.jsonl"         # relative to the task file

The dataset is JSON Lines, one question a line: ``{"id": "q1", "question": "...",
"answer": "42"}``; ``answer`` (the gold answer) is required for majority vote and
ignored for Best-of-N; ``id`` defaults to the line number.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from policies.errors import ConfigError
from policies.extract import ExtractorSpec
from policies.tasks import TaskSpec
from policies.upstream import UpstreamSpec

__all__ = [
    "DatasetRow",
    "DatasetSpec",
    "TaskFile",
    "load_dataset",
    "load_task_file",
    "read_toml",
]


class DatasetSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    limit: int | None = None


class TaskFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    task: TaskSpec
    upstream: UpstreamSpec
    dataset: DatasetSpec


class DatasetRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    question: str
    answer: str | None = None
    id: str | None = None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's table; ConfigError naming ``what`` and the file if it cannot be read."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_task_file(path: str | Path) -> tuple[TaskFile, Path]:
    """Read and validate a task file; returns it with the dataset's resolved path."""
    path = Path(path)
    raw = read_toml(path, "task file")
    task = raw.get("task")
    if isinstance(task, dict) and "early_stop" in task:
        # Written by iapo simulate --write-task before it was removed; never read.
        raise ConfigError(
            f"{path}: task.early_stop is not a task-file setting (the optimizer always draws "
            f"every sample); remove it, and set early_stop under the task's [[tasks]] entry "
            f"in the proxy config to stop serving samples once the vote is decided"
        )
    try:
        task_file = msgspec.convert(raw, TaskFile, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    dataset = Path(task_file.dataset.path)
    if not dataset.is_absolute():
        dataset = path.parent / dataset
    return task_file, dataset


def load_dataset(
    path: str | Path, extractor: ExtractorSpec | None, *, limit: int | None = None
) -> list[DatasetRow]:
    """Read a JSONL dataset; gold answers are normalised as ``extractor`` normalises.

    With an extractor (majority vote) every row needs a gold answer; with None (Best-of-N)
    answers are kept as written. ConfigError names the line of a bad row.
    """
    path = Path(path)
    rows: list[DatasetRow] = []
    decoder = msgspec.json.Decoder(DatasetRow)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read dataset {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = decoder.decode(line)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
        answer = row.answer
        if extractor is not None:
            answer = None if answer is None else extractor.normalize(answer)
        if extractor is not None and answer is None:
            raise ConfigError(f"{path}:{number}: a majority-vote task needs a gold 'answer'")
        rows.append(DatasetRow(row.question, answer, row.id or str(number)))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise ConfigError(f"dataset {path} has no questions")
    return rows
