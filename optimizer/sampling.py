"""The one small async protocol the optimizer draws samples through.

"Draw ``n`` samples of prompt ``p`` on query ``q``": the replay sampler answers from a
recorded table, the live sampler from an OpenAI-compatible upstream. Both return a
:class:`SampleBatch`; the optimizer sees nothing else (never a probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["SampleBatch", "Sampler"]


class SampleBatch(msgspec.Struct, frozen=True):
    """``n`` samples of one prompt on one query.

    ``answers``: the extracted answer of each sample (None: nothing extractable).
    ``costs``: the cost of each sample, in the task's cost unit.
    ``rewards``: for Best-of-N, one row of objective scores per sample (NaN: unscored).
    ``cached``: how many of these samples were read from the sample cache, not paid for.
    """

    answers: tuple[str | None, ...]
    costs: tuple[float, ...]
    rewards: tuple[tuple[float, ...], ...] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0

    def __post_init__(self) -> None:
        if len(self.costs) != len(self.answers):
            raise ValueError("a SampleBatch needs one cost per answer")
        if self.rewards is not None and len(self.rewards) != len(self.answers):
            raise ValueError("a SampleBatch needs one reward row per answer")


@runtime_checkable
class Sampler(Protocol):
    """Where samples come from.

    ``golds[q]`` is the gold answer of query ``q`` (None for Best-of-N tasks).
    ``sample(p, q, n, draw=d)`` returns samples number ``d .. d+n-1`` of prompt ``p``
    on query ``q`` in this run; a caching sampler keys them by that index, so a
    resumed run gets the same samples back instead of paying twice.
    """

    @property
    def num_prompts(self) -> int: ...

    @property
    def num_queries(self) -> int: ...

    @property
    def golds(self) -> Sequence[str | None]: ...

    async def sample(
        self, prompt_index: int, query_index: int, n: int, *, draw: int = 0
    ) -> SampleBatch: ...
