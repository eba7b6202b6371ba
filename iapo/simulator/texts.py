"""The words around the numbers: question texts, answer strings and reply texts.

Every question carries a marker (``Problem train-17``, ``Request test-3``) so the simulator
can tell which table row a chat request is about, whatever prompt or template wraps it.
Answers are integers: category c of a question is its gold value for the gold category and
a distinct wrong value otherwise, so the ``boxed`` extractor separates them.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from policies.table import Split, replay_prompt_texts

__all__ = [
    "QUESTION_MARKER",
    "answer_values",
    "arithmetic_questions",
    "generic_prompts",
    "majority_reply",
    "request_questions",
    "reward_reply",
]

QUESTION_MARKER = re.compile(r"\b(Problem|Request) (train|test)-(\d+)\b")

_REQUESTS = (
    "help me write a polite email declining a meeting",
    "explain how to store kitchen knives safely",
    "suggest a weekend plan for a rainy city trip",
    "summarise the pros and cons of remote work",
    "draft a message asking my landlord to fix the heating",
    "give me tips to fall asleep faster",
    "explain how vaccines train the immune system",
    "outline a budget for a small birthday party",
)


def generic_prompts(count: int) -> tuple[str, ...]:
    """Distinct prompt texts for a recorded majority table whose prompts were not published
    (the texts ``iapo optimize --replay`` gives them too)."""
    return replay_prompt_texts(count)


def arithmetic_questions(
    split: Split, count: int, rng: np.random.Generator
) -> tuple[tuple[str, ...], npt.NDArray[np.int64]]:
    """``count`` questions of ``split`` with their gold values (Q,)."""
    a = rng.integers(3, 40, count)
    b = rng.integers(3, 25, count)
    c = rng.integers(1, 100, count)
    texts = tuple(f"Problem {split}-{q}: compute {a[q]} × {b[q]} + {c[q]}." for q in range(count))
    return texts, np.asarray(a * b + c, dtype=np.int64)


def answer_values(
    gold_values: npt.NDArray[np.int64],
    gold_categories: npt.NDArray[np.int64],
    categories: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """(Q, C) the integer each answer category stands for; the gold category's is gold."""
    questions = len(gold_values)
    offsets = np.array(
        [rng.choice(np.r_[-12:0, 1:13], size=categories, replace=False) for _ in range(questions)]
    ).reshape(questions, categories)
    values = gold_values[:, None] + offsets
    values[np.arange(questions), gold_categories] = gold_values
    return np.asarray(values, dtype=np.int64)


def request_questions(split: Split, count: int) -> tuple[str, ...]:
    """``count`` open-ended requests of ``split`` (Best-of-N tasks have no gold answer)."""
    return tuple(f"Request {split}-{q}: {_REQUESTS[q % len(_REQUESTS)]}." for q in range(count))


def majority_reply(question: str, prompt: int | None, answer: int) -> str:
    """One sample's text: a short reasoning line, then the answer for the boxed extractor."""
    subject = QUESTION_MARKER.search(question)
    about = subject.group(0) if subject else "this problem"
    approach = "A generic approach" if prompt is None else f"Approach {prompt}"
    return (
        f"{approach}: I read {about}, set up the computation and carry it out. "
        f"The answer is \\boxed{{{answer}}}."
    )


def reward_reply(question: str, prompt: int | None, tag: str, label: str = "") -> str:
    """One Best-of-N sample's text, ending in the hidden tag the reward endpoint reads;
    ``label`` names the drawn outcome of a replayed table (e.g. ``outcome 3``)."""
    subject = QUESTION_MARKER.search(question)
    about = subject.group(0) if subject else "your request"
    style = "A generic" if prompt is None else f"Style {prompt}"
    drawn = f" ({label})" if label else ""
    return (
        f"{style} reply to {about}{drawn}: here is what I suggest, with the reasons and the "
        f"caveats that matter. [{tag}]"
    )
