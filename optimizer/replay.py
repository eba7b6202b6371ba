"""The replay sampler: draws samples from a recorded table of either kind.

The table is a black box behind the :class:`~optimizer.sampling.Sampler` protocol:
the optimizer only sees the samples it pays for, so a replay run predicts a live run.

    sampler = ReplaySampler(load_table("MATH_final.npz"), np.random.default_rng(0))
    batch = await sampler.sample(3, 17, 8)      # 8 answers of prompt 3 on query 17
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from optimizer.sampling import SampleBatch
from policies.table import AnyTable, BestOfNTable

__all__ = ["ReplaySampler"]

# Category and outcome labels as answers: interned once, so a sample costs no formatting.
_LABELS: dict[int, str] = {}


def _label(category: int) -> str:
    label = _LABELS.get(category)
    if label is None:
        label = _LABELS[category] = str(category)
    return label


class ReplaySampler:
    """Samples a table's training split with an injected generator.

    Majority table: a sample is a draw from ``cat_probs[p, q]``; its answer is the category
    index as text, and the gold answer of query ``q`` is ``str(answers[q])``.
    Best-of-N table: a sample is a draw of outcome m from ``bon_probs[p, q]``; its answer
    is ``str(m)``, its reward row ``bon_outcomes[p, q, m]``, and there is no gold answer.
    One sample of prompt ``p`` costs ``cost_per_prompt[p]``.
    """

    def __init__(self, table: AnyTable, rng: np.random.Generator) -> None:
        self._outcomes: npt.NDArray[np.float64] | None = None
        if isinstance(table, BestOfNTable):
            probs = table.bon_probs
            self._outcomes = table.bon_outcomes
            self._golds: tuple[str | None, ...] = (None,) * table.num_queries
        else:
            probs = table.cat_probs
            self._golds = tuple(_label(int(a)) for a in table.answers)
        self._cdf = np.cumsum(probs, axis=-1)
        self._cdf[..., -1] = 1.0  # rounding must never push a draw past the last category
        self._cost = [float(c) for c in table.cost_per_prompt]
        self._labels = tuple(_label(c) for c in range(probs.shape[-1]))
        self._rng = rng
        self.samples_drawn = 0

    @property
    def num_prompts(self) -> int:
        return int(self._cdf.shape[0])

    @property
    def num_queries(self) -> int:
        return int(self._cdf.shape[1])

    @property
    def golds(self) -> Sequence[str | None]:
        return self._golds

    async def sample(
        self, prompt_index: int, query_index: int, n: int, *, draw: int = 0
    ) -> SampleBatch:
        return self.sample_now(prompt_index, query_index, n)

    def sample_now(self, prompt_index: int, query_index: int, n: int) -> SampleBatch:
        """The synchronous core of :meth:`sample`."""
        drawn = np.searchsorted(self._cdf[prompt_index, query_index], self._rng.random(n))
        labels = self._labels
        self.samples_drawn += n
        rewards = None
        if self._outcomes is not None:
            rows = self._outcomes[prompt_index, query_index, drawn].tolist()
            rewards = tuple(map(tuple, rows))
        return SampleBatch(
            answers=tuple(labels[c] for c in drawn.tolist()),
            costs=(self._cost[prompt_index],) * n,
            rewards=rewards,
        )
