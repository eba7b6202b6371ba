"""The reward-service contract for Best-of-N (iapo reward v1).

A reward service scores a batch of candidate answers to one conversation on K
objectives. iapo calls it with ``POST {url}`` and this JSON body::

    {"model": "rm-name or null",
     "messages": [{"role": "user", "content": "..."}],   # the conversation, as sent upstream
     "candidates": ["answer 1", "answer 2"],             # the N sampled completions
     "objectives": ["helpfulness", "harmlessness"]}      # what to score

and expects ``200`` with one row of K scores per candidate, in the order asked::

    {"objectives": ["helpfulness", "harmlessness"],
     "scores": [[0.82, 0.40], [0.35, 0.91]]}

Scores are floats on any scale, higher is better; a tier's ``objective_weights``
combine them (Σ w_k·r_k). ``iapo simulate`` serves this contract. The client that
speaks it (and vLLM's score/pooling API) is :mod:`policies.scoring`, used by the
proxy and the optimizer alike.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from policies.upstream import UpstreamSpec

__all__ = ["RewardRequest", "RewardResponse", "RewardSpec"]


class RewardSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where and how a task's candidates are scored.

    ``kind="iapo"`` speaks the contract above; ``kind="vllm"`` calls a vLLM reward model
    (``/pooling`` or ``/score``) and yields one objective, named by ``objectives[0]``.
    """

    url: str
    objectives: tuple[str, ...] = ("reward",)
    kind: Literal["iapo", "vllm"] = "iapo"
    model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ValueError("reward 'objectives' must name at least one objective")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError("reward 'objectives' must be distinct")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"reward 'url' must be an http(s) URL, got {self.url!r}")
        if self.kind == "vllm" and len(self.objectives) != 1:
            raise ValueError("a vLLM reward model scores one objective; give one name")

    def api_key(self) -> str | None:
        """The key from ``api_key_env`` (ConfigError if it is named but unset), sent to the
        reward service only: never the upstream's key."""
        if self.api_key_env is None:
            return None
        return UpstreamSpec(
            self.url, "reward", name="reward", api_key_env=self.api_key_env
        ).api_key()


class RewardRequest(msgspec.Struct, frozen=True):
    candidates: list[str]
    objectives: list[str]
    messages: list[dict[str, Any]] = msgspec.field(default_factory=list)
    model: str | None = None


class RewardResponse(msgspec.Struct, frozen=True):
    objectives: list[str]
    scores: list[list[float]]
