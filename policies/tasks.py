"""Tasks: named jobs with candidate prompts, a strategy and how a sample is scored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from policies.extract import ExtractorSpec
from policies.reward import RewardSpec
from policies.tiers import DEFAULT_TIERS, Tier

__all__ = ["QUESTION_SLOT", "PromptCandidate", "Strategy", "TaskSpec", "question_of"]

Strategy = Literal["majority", "best_of_n"]
QUESTION_SLOT = "{question}"

TaskName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def question_of(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the last user message (the question a template wraps)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    part.get("text", "")
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text"
                )
    return ""


class PromptCandidate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One candidate prompt.

    ``role="system"``: ``text`` becomes the system message (replacing any the client sent).
    ``role="template"``: ``text`` wraps the last user message at its ``{question}`` slot.
    """

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    text: Annotated[str, msgspec.Meta(min_length=1)]
    role: Literal["system", "template"] = "system"

    def __post_init__(self) -> None:
        if self.role == "template" and QUESTION_SLOT not in self.text:
            raise ValueError(f"prompt {self.id!r} is a template but has no {QUESTION_SLOT} slot")

    def apply(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages to send upstream: this prompt applied to the client's messages."""
        if self.role == "system":
            rest = [m for m in messages if m.get("role") not in ("system", "developer")]
            return [{"role": "system", "content": self.text}, *rest]
        out = [dict(m) for m in messages]
        for message in reversed(out):
            if message.get("role") == "user":
                # str.replace, not str.format: math prompts are full of braces.
                message["content"] = self.text.replace(QUESTION_SLOT, question_of([message]))
                return out
        return [*out, {"role": "user", "content": self.text.replace(QUESTION_SLOT, "")}]

    def render(self, question: str) -> list[dict[str, Any]]:
        """Messages for a bare question (the optimizer's dataset rows)."""
        return self.apply([{"role": "user", "content": question}])


class TaskSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A named job: candidate prompts, a strategy, and how a sample is scored."""

    name: TaskName
    prompts: tuple[PromptCandidate, ...]
    strategy: Strategy = "majority"
    extractor: ExtractorSpec = ExtractorSpec()
    reward: RewardSpec | None = None
    default_tier: str = "standard"
    n_max: Annotated[int, msgspec.Meta(ge=1, le=256)] = 32
    tiers: tuple[Tier, ...] = DEFAULT_TIERS

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError(f"task {self.name!r} has no prompts")
        ids = [p.id for p in self.prompts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task {self.name!r}: prompt ids must be unique, got {ids}")
        names = [t.name for t in self.tiers]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: tier names must be unique and non-empty")
        if self.default_tier not in names:
            raise ValueError(
                f"task {self.name!r}: default_tier {self.default_tier!r} is not one of {names}"
            )
        for tier in self.tiers:
            try:
                tier.stop_rule.check_strategy(self.strategy)
            except ValueError as exc:
                raise ValueError(f"task {self.name!r}, tier {tier.name!r}: {exc}") from None
        if self.strategy == "best_of_n":
            if self.reward is None:
                raise ValueError(f"task {self.name!r}: strategy best_of_n needs a 'reward' section")
            for tier in self.tiers:
                unknown = set(tier.objective_weights or {}) - set(self.reward.objectives)
                if unknown:
                    raise ValueError(
                        f"tier {tier.name!r} weights unknown objectives {sorted(unknown)}; "
                        f"the reward service scores {list(self.reward.objectives)}"
                    )

    def prompt(self, prompt_id: str) -> PromptCandidate:
        for candidate in self.prompts:
            if candidate.id == prompt_id:
                return candidate
        raise KeyError(prompt_id)

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)
