"""Budget plans: how a fixed budget of samples is split into rounds and pulls.

The unit is one generated sample. Every method spends exactly its budget: each
round gets ⌊remaining / rounds left⌋, unspent samples carry to the next round,
and the last round spends what is left in smaller pulls. Nothing here samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = ["PhasePlan", "Plan", "allocate", "halving_schedule", "rounds_for"]


class PhasePlan(msgspec.Struct, frozen=True):
    """One phase of a method (warm-up, successive halving, ...).

    ``arms[r]``: active arms per tier at the start of round r; ``shares[r]``: the
    samples that round is planned to get; ``first_pulls``: round 1 as (prompts, pulls
    per prompt, N), or None when it depends on earlier samples.
    """

    name: str
    budget: int
    arms: tuple[tuple[int, ...], ...]
    shares: tuple[int, ...]
    first_pulls: tuple[int, int, int] | None = None


class Plan(msgspec.Struct, frozen=True):
    """What a run will do before it samples: phases, total samples, warnings."""

    method: str
    budget: int
    phases: tuple[PhasePlan, ...]
    warnings: tuple[str, ...] = ()

    @property
    def samples(self) -> int:
        """Exactly the samples the run will draw (its whole budget)."""
        return sum(phase.budget for phase in self.phases)

    def describe(self) -> list[str]:
        """Human-readable lines, one per round."""
        lines = [f"method {self.method}: {self.samples} samples in {len(self.phases)} phase(s)"]
        for phase in self.phases:
            lines.append(f"  {phase.name}: {phase.budget} samples, {len(phase.shares)} round(s)")
            for r, (arms, share) in enumerate(zip(phase.arms, phase.shares, strict=True), 1):
                pulls = ""
                if r == 1 and phase.first_pulls is not None:
                    prompts, per_prompt, n = phase.first_pulls
                    pulls = f", {prompts} prompts × {per_prompt} pull(s) at N={n}"
                tiers = "/".join(str(a) for a in arms)
                lines.append(f"    round {r}: arms per tier {tiers}, ~{share} samples{pulls}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return lines


def rounds_for(arms: int) -> int:
    """⌈log2 #arms⌉ halvings end with one arm (at least one round)."""
    return max(1, math.ceil(math.log2(max(arms, 1))))


def halving_schedule(arms: Sequence[int], rounds: int, halve: bool = True) -> list[tuple[int, ...]]:
    """Active arms per tier at the start of each round (keeping ⌈n/2⌉ after each)."""
    out, current = [], tuple(arms)
    for _ in range(rounds):
        out.append(current)
        if halve:
            current = tuple(max(1, math.ceil(a / 2)) for a in current)
    return out


def shares(budget: int, rounds: int) -> tuple[int, ...]:
    """Per-round shares when nothing carries over: ⌊B/R⌋, the last round gets the rest."""
    base = budget // rounds
    return (*([base] * (rounds - 1)), budget - base * (rounds - 1))


def allocate(
    budget: int,
    sizes: npt.NDArray[np.int64],
    rng: np.random.Generator,
    *,
    spend_all: bool,
) -> tuple[list[tuple[int, int]], bool]:
    """Pulls ``(prompt, N)`` for one round of ``budget`` samples.

    ``sizes`` (P,): each prompt's pull size (0 = not pulled). Equal full-size pulls
    per prompt when the budget allows; otherwise one pull per prompt at the largest N
    the share allows, or N=1 pulls on a random subset of prompts. With ``spend_all``
    the remainder is spent too, in pulls as large as it allows. Returns the pulls and
    whether the round had to scale its pulls down.
    """
    prompts = np.flatnonzero(sizes > 0)
    if budget <= 0 or prompts.size == 0:
        return [], False
    total = int(sizes[prompts].sum())
    per_prompt = budget // total
    pulls: list[tuple[int, int]] = []
    scaled = per_prompt == 0
    if not scaled:
        for _ in range(per_prompt):
            pulls.extend((int(p), int(sizes[p])) for p in prompts)
    else:
        share = budget // prompts.size
        if share >= 1:
            pulls.extend((int(p), int(min(sizes[p], share))) for p in prompts)
        else:
            chosen = rng.choice(prompts, size=budget, replace=False)
            pulls.extend((int(p), 1) for p in np.sort(chosen))
    left = budget - sum(n for _, n in pulls)
    if spend_all:
        order = rng.permutation(prompts)
        while left > 0:
            for p in order:
                n = int(min(sizes[p], left))
                pulls.append((int(p), n))
                left -= n
                if left == 0:
                    break
    return pulls, scaled
