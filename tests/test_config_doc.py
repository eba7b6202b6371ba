"""docs/config.md is generated from the msgspec schemas and says what every key means."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    path = ROOT / "docs" / "build_config.py"
    spec = importlib.util.spec_from_file_location("build_config", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_page_is_what_the_schemas_generate(generator: ModuleType) -> None:
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == generator.render(), "run: python docs/build_config.py"
    assert generator.main(["--check"]) == 0


def test_every_schema_field_has_a_meaning_and_no_meaning_is_stale(generator: ModuleType) -> None:
    fields = generator.documented_fields()
    assert set(generator.MEANINGS) == fields


def test_page_lists_every_key_of_both_files(generator: ModuleType) -> None:
    from policies import TaskFile
    from proxy.config import ProxyConfig, ServerConfig, TaskConfig

    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| (.+?) \|", page, flags=re.MULTILINE)
    keys = {key for key, _, _ in rows}
    for schema in (ProxyConfig, ServerConfig, TaskConfig, TaskFile):
        assert set(schema.__struct_fields__) <= keys, schema.__name__
    # the keys the issue found only in the source, with their defaults
    by_key = {key: (kind, default) for key, kind, default in rows}
    assert by_key["passthrough"] == ("boolean", "`true`")
    assert by_key["key_sha256"] == ("array of string", "empty")
    assert by_key["max_tokens"] == ("integer (≥ 1) (optional)", "none")
    for table in ("[retry]", "[breaker]", "[tasks.tiers.NAME]", "[tasks.extractor]"):
        assert f"### `{table}`" in page


def test_readme_points_to_the_reference() -> None:
    assert "docs/config.md" in (ROOT / "README.md").read_text(encoding="utf-8")
