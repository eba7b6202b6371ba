from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimizer import RecordedTable

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "MATH_final.npz"


def deceiving_table(queries: int = 60) -> RecordedTable:
    """4 prompts, 5 categories, gold = category 0 on every query.

    - prompt 0, the deceiver: best at N=1 (0.79) but on 30% of queries one wrong
      answer dominates (0.7), so its large-N accuracy falls to 0.7;
    - prompt 1: 0.6 correct everywhere, wrong answers spread thin: near 1.0 at large N;
    - prompts 2, 3: poor (0.3 correct, one dominant wrong answer 0.5).
    """
    probs = np.zeros((4, queries, 5))
    hard = np.arange(queries) < round(0.3 * queries)
    probs[0, ~hard, 0] = 1.0
    probs[0, hard] = [0.3, 0.7, 0.0, 0.0, 0.0]
    probs[1] = [0.6, 0.1, 0.1, 0.1, 0.1]
    probs[2:] = [0.3, 0.5, 0.1, 0.1, 0.0]
    cost = np.array([0.01, 0.01, 0.01, 0.01])
    return RecordedTable(probs, np.zeros(queries, dtype=np.int64), cost)


def random_table(
    rng: np.random.Generator, prompts: int, queries: int, categories: int
) -> RecordedTable:
    probs = rng.dirichlet(np.ones(categories) * 0.5, size=(prompts, queries))
    answers = rng.integers(categories, size=queries)
    return RecordedTable(probs, answers, rng.uniform(0.001, 0.02, size=prompts))


def save_table(table: RecordedTable, path: Path) -> Path:
    np.savez(
        path,
        cat_probs=table.cat_probs,
        answers=table.answers,
        cost_per_prompt=table.cost_per_prompt,
    )
    return path


def late_bloomer_table(prompts: int = 12, queries: int = 60, field: float = 0.3) -> RecordedTable:
    """Gold is category 0 everywhere; the right arm per tier is known by construction.

    - prompt 7, the late bloomer: 0.55 correct, wrong answers spread thin, so near 1.0
      at large N but only 0.55 at N=1;
    - prompt 2: the N=1 winner (0.85) that is stuck on one wrong answer (0.8) on a
      quarter of the queries: best for a cost-conscious tier, 0.75 at large N;
    - the rest: one dominant wrong answer (0.85 - ``field``) against ``field`` correct;
      prompts 0 and 1 are bad (0.2 correct).

    With ``field`` 0.5 the late bloomer is hard to tell from the field on small pulls
    (0.55 vs 0.5 correct at N=1): screening then often drops it (the caveat of any
    screening at small N), and so does halving, a little less often.
    """
    probs = np.zeros((prompts, queries, 5))
    probs[:] = [field, 0.85 - field, 0.05, 0.05, 0.05]
    probs[:2] = [0.2, 0.6, 0.1, 0.1, 0.0]
    stuck = np.arange(queries) < queries // 4
    probs[2, ~stuck] = [0.95, 0.05, 0.0, 0.0, 0.0]
    probs[2, stuck] = [0.2, 0.8, 0.0, 0.0, 0.0]
    probs[7] = [0.55, 0.1, 0.1, 0.1, 0.15]
    cost = np.full(prompts, 0.02)
    return RecordedTable(probs, np.zeros(queries, dtype=np.int64), cost)


def shared_trap_table(rng: np.random.Generator, queries: int = 50) -> RecordedTable:
    """5 prompts; every query has one trap answer that all prompts fall into, to a
    different degree. Prompt 3 is best at large N (its trap mass is always below gold),
    prompt 0 best at N=1 (more gold, but on a third of the queries the trap beats it)."""
    probs = np.zeros((5, queries, 5))
    hard = rng.random(queries) < 0.33
    probs[0] = [0.7, 0.3, 0.0, 0.0, 0.0]
    probs[0, hard] = [0.35, 0.65, 0.0, 0.0, 0.0]
    probs[1] = [0.4, 0.45, 0.05, 0.05, 0.05]
    probs[2] = [0.3, 0.4, 0.1, 0.1, 0.1]
    probs[3] = [0.5, 0.2, 0.1, 0.1, 0.1]
    probs[4] = [0.45, 0.5, 0.05, 0.0, 0.0]
    return RecordedTable(probs, np.zeros(queries, dtype=np.int64), np.full(5, 0.01))


@pytest.fixture
def deceiving() -> RecordedTable:
    return deceiving_table()


@pytest.fixture
def math_path() -> Path:
    if not DATA.exists():
        pytest.skip(f"recorded table {DATA} is not available")
    return DATA


@contextmanager
def served_in_thread(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` on 127.0.0.1 from its own event loop in a thread (so the CLI
    under test can run its own loop); yields the base URL, stops the server after."""
    from iapo.simulator import serve_in_background

    urls: queue.Queue[str | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with serve_in_background(app) as url:
                urls.put(url)
                await stop.wait()
        except BaseException as exc:  # surface start-up errors in the test
            urls.put(exc)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    url = urls.get(timeout=20)
    if isinstance(url, BaseException):
        raise url
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=20)
        loop.close()
