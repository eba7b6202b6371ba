"""The simulator's logic, apart from HTTP: who is asking what, and what a sample says.

A chat request is routed by the question marker in its messages (``Problem train-17`` →
the majority task, ``Request test-3`` → the Best-of-N task) and by its system message (or
the template text around the question), which names the candidate prompt. A prompt the
table does not know gets the prompts' average behaviour, with a WARNING once per prompt
text and ``Completion.prompt_known`` False, which the app counts: a policy whose prompts
the simulator does not know is almost always a mistake (see
``policies.table.replay_prompt_texts``). A question without a marker is mapped to a
training question by a hash of its text. Neither is refused, so a hand-written request
still gets a sensible answer.

    sim = Simulator(synthetic_majority_table(), synthetic_reward_table(), seed=0)
    completion = sim.complete(messages, n=4)
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from iapo.simulator import texts
from iapo.simulator.rewards import RewardSource
from policies.errors import InvalidRequest
from policies.table import RecordedTable, Split
from policies.tasks import QUESTION_SLOT

__all__ = ["Completion", "Route", "Sample", "Simulator"]

logger = logging.getLogger(__name__)

TOKENS_PER_COST_UNIT = 100_000
"""Completion tokens per unit of table cost: a task file prices completion tokens at
``1000 / TOKENS_PER_COST_UNIT`` per 1k, so a sample's upstream cost is its table cost."""

_TAG = re.compile(r"\[sim:(\d+|x):(train|test)-(\d+):([0-9a-f]{1,16})\]")
_SPLITS: tuple[Split, ...] = ("train", "test")
_MAX_WARNED = 1000


@dataclass(frozen=True)
class Sample:
    text: str
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """The samples of one chat request; ``prompt_known`` False: the request's prompt was
    none of the table's, so it got the prompts' average behaviour."""

    prompt_tokens: int
    samples: tuple[Sample, ...]
    prompt_known: bool = True

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.samples)


@dataclass(frozen=True)
class Route:
    """Which table cell a request asks about; ``prompt`` None = a prompt the table lacks."""

    kind: Literal["majority", "reward"]
    prompt: int | None
    split: Split
    question: int


def _contents(messages: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if isinstance(content, str):
            out.append((str(message.get("role", "")), content))
    return out


class Simulator:
    """Samples answers from a majority table and reward vectors from a reward source
    (the synthetic :class:`RewardTable` or a Best-of-N table as :class:`TableRewards`).

    ``rng`` draws samples when a request gives no ``seed``; with a seed, a request's
    samples depend only on (seed, prompt, question).
    """

    def __init__(
        self,
        majority: RecordedTable,
        reward: RewardSource | None = None,
        *,
        majority_prompts: Sequence[str] | None = None,
        reward_prompts: Sequence[str] | None = None,
        seed: int = 0,
        rng: np.random.Generator | None = None,
        replayed: Literal["majority", "reward"] | None = None,
    ) -> None:
        self.majority = majority
        self.reward = reward
        self.replayed = replayed  # which side answers from a recorded table, if any
        self._warned: set[str | None] = set()  # unknown prompts already logged
        self.majority_prompts = tuple(
            majority_prompts or texts.generic_prompts(majority.num_prompts)
        )
        if len(self.majority_prompts) != majority.num_prompts:
            raise ValueError("majority_prompts must name every prompt of the majority table")
        self.reward_prompts: tuple[str, ...] = ()
        if reward is not None:
            self.reward_prompts = tuple(reward_prompts or texts.generic_prompts(reward.num_prompts))
            if len(self.reward_prompts) != reward.num_prompts:
                raise ValueError("reward_prompts must name every prompt of the reward table")
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        words = np.random.default_rng([seed, 2])
        self.questions: dict[Split, tuple[str, ...]] = {}
        self.values: dict[Split, npt.NDArray[np.int64]] = {}
        for split in _SPLITS:
            probs, gold = majority.split(split)
            if probs is None or gold is None:
                continue
            questions, gold_values = texts.arithmetic_questions(split, len(gold), words)
            self.questions[split] = questions
            self.values[split] = texts.answer_values(gold_values, gold, probs.shape[2], words)
        self.requests: dict[Split, tuple[str, ...]] = {}
        if reward is not None:
            for split in _SPLITS:
                self.requests[split] = texts.request_questions(split, reward.questions(split))

    # -- what the writer and the demo need ------------------------------------------------

    def gold_answer(self, split: Split, question: int) -> str:
        """The gold answer string of a majority question, as the boxed extractor reads it."""
        return str(self.values[split][question, self.majority.gold(split, question)])

    def cost_per_prompt(self, kind: Literal["majority", "reward"]) -> npt.NDArray[np.float64]:
        """The cost of one sample per prompt, as the usage this simulator reports prices it."""
        table = self.majority if kind == "majority" else self.reward
        assert table is not None
        tokens = np.round(table.cost_per_prompt * TOKENS_PER_COST_UNIT)
        return np.asarray(tokens / TOKENS_PER_COST_UNIT, dtype=np.float64)

    # -- routing --------------------------------------------------------------------------

    def route(self, messages: Sequence[dict[str, Any]]) -> Route:
        contents = _contents(messages)
        kind: Literal["majority", "reward"] = "majority"
        split: Split = "train"
        question = -1
        for _, text in reversed(contents):
            found = texts.QUESTION_MARKER.search(text)
            if found is None:
                continue
            wanted: Literal["majority", "reward"] = (
                "majority" if found.group(1) == "Problem" else "reward"
            )
            asked: Split = "train" if found.group(2) == "train" else "test"
            pool = self.questions if wanted == "majority" else self.requests
            index = int(found.group(3))
            if asked in pool and index < len(pool[asked]):
                kind, split, question = wanted, asked, index
                break
        if question < 0:
            text = "\n".join(t for _, t in contents)
            digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            question = digest % len(self.questions["train"])
            logger.info(
                "no known question in the request; answering as train question %d", question
            )
        prompts = self.majority_prompts if kind == "majority" else self.reward_prompts
        return Route(kind, self._prompt_of(contents, prompts), split, question)

    def _prompt_of(self, contents: list[tuple[str, str]], prompts: tuple[str, ...]) -> int | None:
        system = [t.strip() for role, t in contents if role in ("system", "developer")]
        for index, text in enumerate(prompts):
            if text.strip() in system:
                return index
        # a template wraps the question: look for its fixed text around the slot
        for index, text in enumerate(prompts):
            pieces = [piece.strip() for piece in text.split(QUESTION_SLOT) if piece.strip()]
            if pieces and all(any(piece in t for _, t in contents) for piece in pieces):
                return index
        shown = system[0] if system else None
        # once per distinct prompt (the app counts every request): a misconfigured proxy
        # under load must not flood the log
        if shown not in self._warned and len(self._warned) < _MAX_WARNED:
            self._warned.add(shown)
            logger.warning(
                "a prompt this simulator does not know (system message: %.80r); answering "
                "with the prompts' average behaviour. A policy must be optimized on the same "
                "table (iapo optimize --replay) for its prompts to be known",
                shown,
            )
        return None

    # -- sampling -------------------------------------------------------------------------

    def complete(
        self,
        messages: Sequence[dict[str, Any]],
        n: int = 1,
        *,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """``n`` samples for one chat request, with the usage they would cost."""
        if n < 1:
            raise InvalidRequest("n must be at least 1", param="n")
        route = self.route(messages)
        rng = self._rng
        if seed is not None:
            code = -1 if route.prompt is None else route.prompt
            rng = np.random.default_rng(
                [seed, code + 1, _SPLITS.index(route.split), route.question]
            )
        if route.kind == "majority":
            samples = self._majority_samples(route, n, rng, max_tokens)
        else:
            samples = self._reward_samples(route, n, rng, max_tokens)
        prompt_tokens = sum(4 + len(t) // 4 for _, t in _contents(messages))
        return Completion(prompt_tokens, tuple(samples), prompt_known=route.prompt is not None)

    def _tokens(self, table_cost: float) -> int:
        return max(1, round(table_cost * TOKENS_PER_COST_UNIT))

    def _majority_samples(
        self, route: Route, n: int, rng: np.random.Generator, max_tokens: int | None
    ) -> list[Sample]:
        table = self.majority
        if route.prompt is None:
            probs = table.split(route.split)[0]
            assert probs is not None
            dist = probs[:, route.question].mean(axis=0)
            dist = dist / dist.sum()
            cost = float(table.cost_per_prompt.mean())
        else:
            dist = table.probs(route.split, route.prompt, route.question)
            cost = float(table.cost_per_prompt[route.prompt])
        categories = rng.choice(len(dist), size=n, p=dist)
        question = self.questions[route.split][route.question]
        tokens = self._tokens(cost)
        return [
            _cut(texts.majority_reply(question, route.prompt, int(answer)), tokens, max_tokens)
            for answer in self.values[route.split][route.question, categories]
        ]

    def _reward_samples(
        self, route: Route, n: int, rng: np.random.Generator, max_tokens: int | None
    ) -> list[Sample]:
        assert self.reward is not None
        table = self.reward
        cost = float(
            table.cost_per_prompt.mean()
            if route.prompt is None
            else table.cost_per_prompt[route.prompt]
        )
        tokens = self._tokens(cost)
        question = self.requests[route.split][route.question]
        code = "x" if route.prompt is None else str(route.prompt)
        samples = []
        for sample_id in rng.integers(0, 2**63, size=n):
            tag = f"sim:{code}:{route.split}-{route.question}:{int(sample_id):x}"
            label = table.label(route.prompt, route.split, route.question, int(sample_id))
            text = texts.reward_reply(question, route.prompt, tag, label)
            samples.append(_cut(text, tokens, max_tokens))
        return samples

    # -- reward contract ------------------------------------------------------------------

    def score(self, candidates: Sequence[str], objectives: Sequence[str]) -> list[list[float]]:
        """Scores (len(candidates), len(objectives)) for the reward contract.

        A candidate is scored by the sample tag it carries; a text without one gets a
        deterministic draw from the prompts' average behaviour.
        """
        if self.reward is None:
            raise InvalidRequest("this simulator has no reward table", param="objectives")
        table = self.reward
        unknown = [name for name in objectives if name not in table.objectives]
        if unknown or not objectives:
            raise InvalidRequest(
                f"unknown objectives {unknown}; this reward service scores "
                f"{list(table.objectives)}",
                param="objectives",
            )
        order = [table.objectives.index(name) for name in objectives]
        rows = []
        for text in candidates:
            scores = self._score_one(text)
            rows.append([scores[k] for k in order])
        return rows

    def _score_one(self, text: str) -> list[float]:
        assert self.reward is not None
        table = self.reward
        tags = _TAG.findall(text)
        if tags:
            code, split_text, question_text, sample_text = tags[-1]
            split: Split = "train" if split_text == "train" else "test"
            question = int(question_text)
            prompt = None if code == "x" else int(code)
            valid_prompt = prompt is None or prompt < table.num_prompts
            if valid_prompt and question < table.questions(split):
                return table.draw(prompt, split, question, int(sample_text, 16))
        return table.draw_unknown(text)


def _cut(text: str, tokens: int, max_tokens: int | None) -> Sample:
    """A sample as generated under ``max_tokens``: cut short, its answer lost, if too long."""
    if max_tokens is None or tokens <= max_tokens:
        return Sample(text, tokens, "stop")
    # keep the same share of the reasoning as of the tokens; the final answer never survives
    head = text.split(" The answer is", 1)[0].split(" [sim:", 1)[0]
    return Sample(head[: max(1, len(head) * max_tokens // tokens)], max_tokens, "length")
