from __future__ import annotations

import numpy as np

from iapo.simulator import MAJORITY_PROMPTS, REWARD_PROMPTS, Route, Simulator
from policies.extract import ExtractorSpec, make_extractor
from policies.tasks import PromptCandidate

boxed = make_extractor(ExtractorSpec(kind="boxed"))


def _ask(simulator: Simulator, prompt: int, split: str, question: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": MAJORITY_PROMPTS[prompt]},
        {"role": "user", "content": simulator.questions[split][question]},  # type: ignore[index]
    ]


def test_routes_by_system_prompt_and_question_marker(simulator: Simulator) -> None:
    assert simulator.route(_ask(simulator, 3, "test", 7)) == Route("majority", 3, "test", 7)
    reward = [
        {"role": "system", "content": REWARD_PROMPTS[4]},
        {"role": "user", "content": simulator.requests["train"][2]},
    ]
    assert simulator.route(reward) == Route("reward", 4, "train", 2)


def test_a_template_prompt_is_recognised_around_the_question() -> None:
    template = PromptCandidate(id="t", text="Careful now.\n{question}\nBox it.", role="template")
    from iapo.simulator import synthetic_majority_table

    sim = Simulator(
        synthetic_majority_table(), majority_prompts=[*MAJORITY_PROMPTS[:5], template.text]
    )
    messages = template.render(sim.questions["train"][4])
    assert sim.route(messages) == Route("majority", 5, "train", 4)


def test_unknown_prompt_and_question_still_get_an_answer(simulator: Simulator) -> None:
    route = simulator.route([{"role": "user", "content": "What is 2 + 2?"}])
    assert route.prompt is None
    assert route.split == "train"
    assert route == simulator.route([{"role": "user", "content": "What is 2 + 2?"}])
    completion = simulator.complete([{"role": "user", "content": "What is 2 + 2?"}], n=3)
    assert all(boxed(s.text) is not None for s in completion.samples)


def test_answers_are_the_table_categories(simulator: Simulator) -> None:
    completion = simulator.complete(_ask(simulator, 2, "train", 0), n=50, seed=1)
    allowed = {str(v) for v in simulator.values["train"][0]}
    answers = {boxed(s.text) for s in completion.samples}
    assert answers <= allowed
    assert len(answers) >= 2
    gold = simulator.gold_answer("train", 0)
    assert gold == str(simulator.values["train"][0, simulator.majority.answers[0]])


def test_a_seed_makes_samples_reproducible(simulator: Simulator) -> None:
    first = simulator.complete(_ask(simulator, 1, "test", 3), n=8, seed=42)
    again = simulator.complete(_ask(simulator, 1, "test", 3), n=8, seed=42)
    other = simulator.complete(_ask(simulator, 1, "test", 3), n=8, seed=43)
    assert first == again
    texts = [[s.text for s in c.samples] for c in (first, other)]
    # 8 draws from a non-degenerate cell under two seeds: equal with negligible chance
    assert texts[0] != texts[1] or len(set(texts[0])) == 1


def test_usage_is_proportional_to_the_table_cost(simulator: Simulator) -> None:
    for prompt in range(simulator.majority.num_prompts):
        completion = simulator.complete(_ask(simulator, prompt, "train", 1), n=4)
        expected = 4 * round(simulator.majority.cost_per_prompt[prompt] * 100_000)
        assert completion.completion_tokens == expected
        assert completion.prompt_tokens > 0


def test_max_tokens_cuts_the_answer_off(simulator: Simulator) -> None:
    completion = simulator.complete(_ask(simulator, 3, "train", 1), n=2, max_tokens=100)
    assert all(
        s.finish_reason == "length" and s.completion_tokens == 100 for s in completion.samples
    )
    assert all(boxed(s.text) is None for s in completion.samples)


def test_reward_scores_follow_the_sample_tag(simulator: Simulator) -> None:
    reward = [
        {"role": "system", "content": REWARD_PROMPTS[2]},
        {"role": "user", "content": simulator.requests["test"][1]},
    ]
    texts = [s.text for s in simulator.complete(reward, n=6).samples]
    scores = simulator.score(texts, ["helpfulness", "harmlessness"])
    assert scores == simulator.score(texts, ["helpfulness", "harmlessness"])
    swapped = simulator.score(texts, ["harmlessness", "helpfulness"])
    assert [row[::-1] for row in swapped] == scores
    assert len({row[0] for row in scores}) == 6  # each sample has its own draw


def test_reward_draws_follow_the_prompt_distribution(simulator: Simulator) -> None:
    table = simulator.reward
    assert table is not None
    reward = [
        {"role": "system", "content": REWARD_PROMPTS[0]},
        {"role": "user", "content": simulator.requests["train"][3]},
    ]
    texts = [s.text for s in simulator.complete(reward, n=800, seed=5).samples]
    scores = np.array(simulator.score(texts, list(table.objectives)))
    mean, spread = table.means[0, 3], table.spread[0]
    # 800 draws: standard error of the mean = spread/28; allow 5 of them
    assert np.all(np.abs(scores.mean(axis=0) - mean) < 5 * spread / np.sqrt(800))
    assert np.all(np.abs(scores.std(axis=0) / spread - 1) < 0.15)
