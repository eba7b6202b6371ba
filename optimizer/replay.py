"""The replay sampler: draws answers from a recorded-distribution table.

The table is a black box behind the :class:`~optimizer.sampling.Sampler` protocol:
the optimizer only sees the samples it pays for, so a replay run predicts a live run.

    sampler = ReplaySampler(load_table("MATH_final.npz"), np.random.default_rng(0))
    batch = await sampler.sample(3, 17, 8)      # 8 answers of prompt 3 on query 17
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optimizer.sampling import SampleBatch
from policies.table import RecordedTable

__all__ = ["ReplaySampler"]

# Category labels as answers: interned once, so a sample costs no string formatting.
_LABELS: dict[int, str] = {}


def _label(category: int) -> str:
    label = _LABELS.get(category)
    if label is None:
        label = _LABELS[category] = str(category)
    return label


class ReplaySampler:
    """Samples ``cat_probs[p, q]`` of a table's training split with an injected generator.

    An answer is the category index as text; the gold answer of query ``q`` is
    ``str(answers[q])``. One sample of prompt ``p`` costs ``cost_per_prompt[p]``.
    """

    def __init__(self, table: RecordedTable, rng: np.random.Generator) -> None:
        self._cdf = np.cumsum(table.cat_probs, axis=-1)
        self._cdf[..., -1] = 1.0  # rounding must never push a draw past the last category
        self._cost = [float(c) for c in table.cost_per_prompt]
        self._golds = tuple(_label(int(a)) for a in table.answers)
        self._labels = tuple(_label(c) for c in range(table.cat_probs.shape[-1]))
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
        categories = np.searchsorted(self._cdf[prompt_index, query_index], self._rng.random(n))
        labels = self._labels
        self.samples_drawn += n
        return SampleBatch(
            answers=tuple(labels[c] for c in categories.tolist()),
            costs=(self._cost[prompt_index],) * n,
        )
