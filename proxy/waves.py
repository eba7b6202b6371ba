"""How big a request's first wave of samples is, learned from where earlier votes decided.

A vote that stops early is decided after some number of samples D: the shortest prefix of
its answers, in the order they arrived, at which the stopping rule says stop
(``decision_point``). D is what the first wave has to cover for the request to end in
one round trip. A first wave of m costs max(m, D) samples (more if later waves overshoot)
and a second round trip when D > m, so the wave that draws the fewest samples while
sending at most a share ``second_trip`` of requests round again is the (1 − second_trip)
quantile of D (``first_wave_size``). A vote still undecided when its calls in flight can
no longer decide it is one of those with D past what it launched; its next wave is the
same quantile of those (``wave_target``), so few votes need more than two round trips.
``WaveHistory`` keeps the last decision points per (task, tier, N).

D is measured on the samples that arrived, which are a prefix of the request's sample
sequence and at least D long (the sampler stops at D or, with calls arriving together,
just after), so it is the decision point the full sequence would have had: unlike the
agreement of an early-stopped vote, which is measured on a partial vote and is biased
upward, it is not biased by stopping early. It assumes the order of arrival is unrelated
to the answer.

    history = WaveHistory()
    first = history.first_wave(("math", "standard", 8), 8)  # None: no history yet
    history.record(("math", "standard", 8), decision_point(answers, 8, rule))
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable, Sequence

from policies import StopRule

__all__ = [
    "HISTORY",
    "MIN_HISTORY",
    "SECOND_TRIP",
    "WaveHistory",
    "decision_point",
    "first_wave_size",
    "wave_target",
]

SECOND_TRIP = 0.6  # the share of requests a first wave may leave undecided (bench/README.md)
HISTORY = 256  # decision points kept per (task, tier, N): recent traffic, a few KB
MIN_HISTORY = 16  # fewer than this: too few to take a quantile from


def decision_point(answers: Sequence[str | None], n: int, stop: StopRule) -> int | None:
    """The fewest of ``answers`` (in arrival order, of a vote of ``n``) after which
    ``stop`` says stop; ``n`` if all ``n`` arrived undecided; None if fewer arrived and the
    vote was never decided (a failed sample: the vote ended early for another reason).
    An answer of None is a sample drawn with no answer: it counts, but votes for nothing.
    """
    if not stop.stops_early:
        return n
    counts: Counter[str] = Counter()
    for k, answer in enumerate(answers[:n], start=1):
        if answer is not None:
            counts[answer] += 1
        if k < n and stop.reason(counts, n - k) is not None:
            return k
    return n if len(answers) >= n else None


def first_wave_size(n: int, points: Sequence[int], *, second_trip: float = SECOND_TRIP) -> int:
    """The smallest first wave that decides all but at most a share ``second_trip`` of
    votes whose decision points were ``points`` (at most ``n``; ``n`` if none are given).

    The fewer samples a first wave has, the fewer a request draws, so among waves that
    keep the chance of a second round trip within ``second_trip`` this one draws fewest.
    """
    return wave_target(n, points, 0, second_trip=second_trip) or n


def wave_target(
    n: int, points: Sequence[int], launched: int, *, second_trip: float = SECOND_TRIP
) -> int:
    """How many samples in all a vote still undecided after ``launched`` should have
    launched by the end of its next wave: the first-wave rule applied to the points past
    ``launched`` (a vote not decided by then is one of them). 0 if none are past it.
    """
    later = sorted(p for p in points if p > launched)
    if not later:
        return 0
    # The ⌈(1 − second_trip)·count⌉-th smallest: that share of points is at most it.
    rank = max(1, math.ceil((1.0 - second_trip) * len(later) - 1e-9))
    return max(1, min(n, later[rank - 1]))


class WaveHistory:
    """The last ``size`` decision points per key (task, tier, N), and the first wave they give."""

    def __init__(
        self,
        *,
        size: int = HISTORY,
        min_points: int = MIN_HISTORY,
        second_trip: float = SECOND_TRIP,
    ) -> None:
        self.size = size
        self.min_points = min_points
        self.second_trip = second_trip
        self._points: dict[Hashable, deque[int]] = {}

    def record(self, key: Hashable, point: int | None) -> None:
        """Remember one request's decision point (None: nothing to learn from it)."""
        if point is None:
            return
        points = self._points.get(key)
        if points is None:
            points = self._points[key] = deque(maxlen=self.size)
        points.append(point)

    def points(self, key: Hashable) -> list[int]:
        """The decision points kept for ``key``, oldest first."""
        return list(self._points.get(key, ()))

    def learned(self, key: Hashable) -> list[int]:
        """The decision points for ``key`` if there are enough to size waves from, else []."""
        points = self._points.get(key, ())
        return list(points) if len(points) >= self.min_points else []

    def first_wave(
        self, key: Hashable, n: int, expected_samples: float | None = None
    ) -> int | None:
        """The first wave for a request under ``key``: from its history once there is
        enough of it, else the policy's ``expected_samples`` (rounded up), else None (the
        sampler's own opening wave)."""
        points = self.learned(key)
        if points:
            return first_wave_size(n, points, second_trip=self.second_trip)
        if expected_samples is not None:
            return max(1, min(n, math.ceil(expected_samples - 1e-9)))
        return None
