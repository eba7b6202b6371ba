"""Halving in mixed pulls (``sh-mixed``): coverage from single samples, shape from larger pulls.

What separates the good prompts of a task is how they do on many queries, so most of
each round's samples are pulls of one sample, every active prompt on the same queries
(as in ``sh-xprompt``: the finalists are compared on as many shared queries as the
budget covers). But one sample of a (prompt, query) says nothing about how a vote over
N samples of it would go: whether a prompt's wrong answers pile up on one trap or spread
thin. That is the shape of the empirical-Bayes prior (:mod:`optimizer._bayes`), and it
is only identified by queries with several samples. So a share ``MIXED_SHARE`` of each
round goes to pulls of ``MIXED_PULL`` samples of every active prompt, on other shared
queries, and the estimator scores summaries with the label-symmetric likelihood
(:func:`optimizer._bayes._likelihood_sym`; estimator kind ``pooled-s``).

Why both. With pulls of one sample and the plain likelihood, a lone wrong vote is
scored as the query's top wrong answer, so the fitted prior believes wrong answers are
concentrated: on MATH every prompt's estimated curve flattens, even falls, past N = 5
(true: +5 to +9 points from N = 1 to 32), the prompts best at N = 1 are preferred and
the premium tier is sometimes given N = 5-9 instead of 32. The symmetric likelihood
removes the bias, but from single samples alone the curve's growth is not identified
(the fitted prior then overshoots: economy picks N = 7 for 5); the larger pulls pin it.

The final N is chosen on the mean of the symmetric and the plain model's curves
(:class:`~optimizer.estimators.AveragedEstimator`): from single samples the symmetric
curves rise a little too fast (economy got N = 7 where 5 is best), the plain ones far
too slowly; on seeds 0-49 the mean gained +0.15 ± 0.04 points at B = 500 and +0.14 ±
0.05 at B = 1000 (paired), nothing at larger budgets.

Measured on MATH (``bench/optimizer.py --first-seed 100 --seeds 100 --paired
sh-pooled``; share, pull and the blend tuned on seeds 0-99, reported on fresh seeds
100-199):

    B                    500     1000    3000    10000
    sh-mixed            98.71   98.96   99.18   99.78 %   (0.58 s at B=10000)
    ... shared finals   98.79   99.04   99.29   99.92 %   (each tier may pick any tier's finalist)
    sh-xprompt          98.59   98.88   99.21   99.61 %
    sh-pooled           98.00   98.25   98.93   99.16 %
    sh-mixed - pooled   +0.71   +0.71   +0.25   +0.62  (± 0.28 / 0.25 / 0.23 / 0.19)

Ahead of ``sh-pooled`` at every budget (within noise at B=3000); level with
``sh-xprompt`` (paired +0.12 ± 0.26 / +0.08 ± 0.25 / -0.03 ± 0.18 / +0.18 ± 0.21).
What it fixes, seen on seeds 0-39: with the plain likelihood and single samples the
survivors' estimated curves flatten after N = 5 while the true ones gain 5 to 9 points
from N = 1 to 32, so prompts best at N = 1 are preferred and premium is sometimes
given N = 5-9 instead of 32. Tried and dropped there: shares 0.05 / 0.15 / 0.2 and
pulls 2 / 3 / 8 (none better at every budget), larger pulls on a random subset of
prompts when a round's share cannot give each one (far worse: -1.2 points at B=500),
the symmetric likelihood with borrowed votes (no better, and 8-11 s at B=10000).
On the synthetic tables it finds the large-N winner among shared traps at B=2000 in
19 of 20 seeds (``sh-pooled`` 16, ``sh-xprompt`` 14) and the late bloomer at B=4000
always. Not the default: single-sample pulls make a Best-of-N task's max-U-statistic
curves flat past the larger pulls' 4 samples, and a live run sends several times more
requests for the same samples (both also true of ``sh-xprompt``).
"""

from __future__ import annotations

from optimizer.engine import Mask, Run
from optimizer.estimators import AveragedEstimator, PooledEstimator

__all__ = ["MIXED_PULL", "MIXED_SHARE", "mixed_halving"]

MIXED_SHARE = 0.1  # of each round's samples, in pulls of MIXED_PULL ...
MIXED_PULL = 4  # ... samples of every active prompt on the same queries; the rest in ones


async def mixed_halving(
    run: Run, *, share: float = MIXED_SHARE, pull: int = MIXED_PULL, blend: bool = True
) -> Mask:
    """Halving over each tier's prompts with exactly ``run.remaining`` samples: each
    round spends ``share`` of its samples on pulls of ``pull`` samples of every active
    prompt (when that share covers one such pull each) and the rest on pulls of one
    sample. With ``blend``, the run's estimates are then the mean of the symmetric and
    the plain pooled model (:class:`~optimizer.estimators.AveragedEstimator`), which the
    final choice of N uses. Returns the final candidates: every tier's finalists, open
    to every tier (:meth:`~optimizer.engine.Run.shared_finalists`)."""
    active = await run.halving(
        run.all_arms(), run.remaining, by_prompt=True, pull_cap=_single, wide=(share, pull)
    )
    if blend and isinstance(run.estimator, PooledEstimator):
        # The final N: the symmetric curves rise a little too fast from single samples,
        # the plain ones far too slowly; choose on their mean.
        run.estimator = AveragedEstimator([run.estimator, run.estimator.remodel("eb")])
    return run.shared_finalists(active)


def _single(share: int, prompts: int) -> int:
    return 1
