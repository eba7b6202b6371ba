"""The proxy's reward scorer: :class:`policies.scoring.RewardScorer` over an
:class:`~proxy.upstream.UpstreamClient` (breaker, concurrency limit, deadline, retries,
metrics). The scoring itself (iapo contract, vLLM ``/pooling`` and ``/score``) lives in
``policies/scoring.py``, shared with the optimizer.
"""

from __future__ import annotations

from typing import TypeAlias

from policies.scoring import RewardScorer as _RewardScorer
from proxy.upstream import UpstreamClient

__all__ = ["RewardScorer"]

RewardScorer: TypeAlias = _RewardScorer[UpstreamClient]
