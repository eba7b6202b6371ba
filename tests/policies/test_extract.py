from __future__ import annotations

import msgspec
import pytest

from policies import ExtractorSpec, make_extractor, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the total is 1,024 apples, or 1024.0.", "1024"),
        ("x = -3.50 at the end", "-3.5"),
        ("first 3 then 7.", "7"),
        ("no digits here", None),
        ("value .5", "0.5"),
    ],
)
def test_last_number(text: str, expected: str | None) -> None:
    assert make_extractor(ExtractorSpec(kind="last_number"))(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("thus \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("first \\boxed{3} then \\boxed{ 4.0 }", "4"),
        ("\\boxed{\\text{Yes}}", "yes"),
        ("cut off \\boxed{\\frac{1", None),
        ("no box", None),
    ],
)
def test_boxed(text: str, expected: str | None) -> None:
    assert make_extractor(ExtractorSpec(kind="boxed"))(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I think the answer is (C).", "C"),
        ("Answer: b", "B"),
        ("Considering A and B...\n(D)", "D"),
        ("A cat sat.", None),
        ("answer is F", None),
    ],
)
def test_option_letter(text: str, expected: str | None) -> None:
    assert make_extractor(ExtractorSpec(kind="option_letter", options="ABCD"))(text) == expected


def test_regex_uses_last_match_and_first_group() -> None:
    extract = make_extractor(ExtractorSpec(kind="regex", pattern=r"FINAL:\s*(\w+)"))
    assert extract("FINAL: Paris\nFINAL: London") == "london"
    assert extract("nothing") is None


def test_bad_regex_is_rejected_with_a_reason() -> None:
    with pytest.raises(msgspec.ValidationError, match="not a valid regex"):
        msgspec.convert({"kind": "regex", "pattern": "("}, ExtractorSpec)
    with pytest.raises(msgspec.ValidationError, match="needs a 'pattern'"):
        msgspec.convert({"kind": "regex"}, ExtractorSpec)


def test_normalize_answer_unifies_forms() -> None:
    assert normalize_answer(" $3.0$. ") == "3"
    assert normalize_answer("\\text{ Blue }") == "blue"
    assert normalize_answer("x \\, + 1") == "x+1"
    assert normalize_answer("  ") is None


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ('{"b": 1.0, "a": [1, 2]}', None, '{"a":[1,2],"b":1}'),
        ('{ "answer": 12.0 }', "answer", "12"),
        ('Here:\n```json\n{"r": {"items": ["x", "y"]}}\n```', "r.items.1", '"y"'),
        ('{"answer": 12}', "missing", None),
        ("not json at all", None, None),
        ('{"answer": "é"}', "answer", '"é"'),
    ],
)
def test_json_extractor_canonicalises_the_value_at_path(
    text: str, path: str | None, expected: str | None
) -> None:
    assert make_extractor(ExtractorSpec(kind="json", path=path))(text) == expected


def test_path_is_only_for_the_json_extractor() -> None:
    with pytest.raises(ValueError, match="path"):
        ExtractorSpec(kind="boxed", path="answer")
