"""Answer extraction: from a sample's text to a normalised answer that can vote.

``make_extractor(ExtractorSpec(kind="boxed"))("so \\boxed{12}.")  # -> "12"``

An extractor returns None when the text holds no answer; such a sample does not vote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Literal

import msgspec

__all__ = ["Extractor", "ExtractorSpec", "json_answer", "make_extractor", "normalize_answer"]

Extractor = Callable[[str], "str | None"]

ExtractorKind = Literal["last_number", "boxed", "option_letter", "regex", "json"]


class ExtractorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to read the answer out of a sample.

    - ``last_number``: the last number in the text (``1,024`` and ``1024.0`` read as ``1024``);
    - ``boxed``: the content of the last ``\\boxed{...}`` (nested braces allowed);
    - ``option_letter``: a multiple-choice letter among ``options`` ("The answer is (C)");
    - ``regex``: the last match of ``pattern`` (its first group if it has one);
    - ``json``: the JSON document the sample is (a fenced ```json block is read too), or the
      value at ``path`` in it (dotted keys and list indices: ``result.items.0``), in a
      canonical form (sorted keys, no spaces, ``1.0`` as ``1``) so equal values vote together.
    """

    kind: ExtractorKind = "last_number"
    pattern: str | None = None
    options: str = "ABCDE"
    case_sensitive: bool = False
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError("extractor kind 'regex' needs a 'pattern'")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(
                    f"extractor pattern {self.pattern!r} is not a valid regex: {exc}"
                ) from None
        if self.path is not None and self.kind != "json":
            raise ValueError("extractor 'path' is only read by kind 'json'")
        if self.kind == "option_letter" and not re.fullmatch(r"[A-Za-z]+", self.options):
            raise ValueError("extractor 'options' must be letters, e.g. 'ABCD'")

    def normalize(self, gold: str) -> str | None:
        """A gold answer in the form this extractor's answers take, so they compare equal."""
        if self.kind == "option_letter":
            letter = gold.strip().strip("().").strip().upper()
            return letter or None
        if self.kind == "last_number":
            return _canonical_number(gold.strip().strip("$.").strip()) or normalize_answer(gold)
        if self.kind == "json":
            return json_answer(gold, None)
        return normalize_answer(gold, case_sensitive=self.case_sensitive)


_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])|(?<![\w.])-?\.\d+")
_TEXT_WRAPPERS = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")


def _canonical_number(text: str) -> str | None:
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def normalize_answer(answer: str, *, case_sensitive: bool = False) -> str | None:
    """Canonical form of an answer, so that equal answers vote together.

    Strips math delimiters, ``\\text{}``, spacing commands, trailing punctuation and
    white space; numbers become canonical decimals (``"3.50"`` → ``"3.5"``,
    ``"1,000"`` → ``"1000"``). Returns None for an empty answer.
    """
    text = _TEXT_WRAPPERS.sub(r"\1", answer)
    text = _SPACING.sub("", text)
    text = text.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac")
    text = text.strip().strip("$.").strip()
    if not text:
        return None
    number = _canonical_number(text) if re.fullmatch(r"[-\d.,]+", text) else None
    if number is not None:
        return number
    text = re.sub(r"\s+", "", text)
    return text if case_sensitive else text.lower()


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: the sample was cut off


_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_MISSING = object()


def _canonical_json(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_json(v) for v in value]
    return value


def json_answer(text: str, path: str | None) -> str | None:
    """The canonical JSON of ``text`` (or of the value at ``path`` in it); None if unreadable."""
    fenced = _FENCE.findall(text)
    candidates = [fenced[-1]] if fenced else []
    candidates.append(text)
    for candidate in candidates:
        try:
            value: object = json.loads(candidate)
        except ValueError:
            continue
        for key in path.split(".") if path else ():
            if isinstance(value, dict):
                value = value.get(key, _MISSING)
            elif (
                isinstance(value, list)
                and key.lstrip("-").isdigit()
                and -len(value) <= int(key) < len(value)
            ):
                value = value[int(key)]
            else:
                value = _MISSING
            if value is _MISSING:
                return None
        return json.dumps(
            _canonical_json(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    return None


def make_extractor(spec: ExtractorSpec) -> Extractor:
    """Build the extractor function for ``spec``."""
    case_sensitive = spec.case_sensitive

    if spec.kind == "last_number":

        def last_number(text: str) -> str | None:
            matches = _NUMBER.findall(text)
            return _canonical_number(matches[-1]) if matches else None

        return last_number

    if spec.kind == "boxed":

        def boxed(text: str) -> str | None:
            content = _last_boxed(text)
            return None if content is None else normalize_answer(content)

        return boxed

    if spec.kind == "option_letter":
        letters = "".join(sorted(set(spec.options.upper())))
        explicit = re.compile(
            rf"answer(?:\s+is)?\s*[:=]?\s*\(?\s*([{letters}])\s*\)?(?![A-Za-z])", re.IGNORECASE
        )
        standalone = re.compile(rf"(?:^|[\s(\[])\(?([{letters}])(?:\)|\]|\.|:|$)(?![A-Za-z])", re.M)

        def option_letter(text: str) -> str | None:
            found = explicit.findall(text) or standalone.findall(text)
            return found[-1].upper() if found else None

        return option_letter

    if spec.kind == "json":
        path = spec.path

        def json_value(text: str) -> str | None:
            return json_answer(text, path)

        return json_value

    assert spec.pattern is not None  # checked by ExtractorSpec
    flags = 0 if case_sensitive else re.IGNORECASE
    pattern = re.compile(spec.pattern, flags | re.MULTILINE)

    def regex(text: str) -> str | None:
        last: re.Match[str] | None = None
        for last in pattern.finditer(text):  # noqa: B007 - we want the last match
            pass
        if last is None:
            return None
        value = last.group(1) if pattern.groups else last.group(0)
        return None if value is None else normalize_answer(value, case_sensitive=case_sensitive)

    return regex
