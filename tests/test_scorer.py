"""The one scoring path (trajlab.rewards.scorer.Scorer): reward, prediction and `correct`
exactly as the trainer and `trajlab eval` both record them."""

from __future__ import annotations

import pytest

from trajlab.build import build_scorer
from trajlab.config import ConfigError
from trajlab.types import Example, Segment, Trajectory

EX = Example(id="ex", question="What is 1234 * 5?", answer="6170")
QA = Example(id="qa", question="Who wrote 1984?", answer="George Orwell")


def traj(*model_texts: str, tool: str | None = None) -> Trajectory:
    t = Trajectory(example_id="ex")
    t.add(Segment("prompt", [1], text="q"))
    for i, text in enumerate(model_texts):
        t.add(Segment("model", [2, 3], text=text, logprobs=[-0.1, -0.1]))
        if tool is not None and i == 0:
            t.add(Segment("tool", [4], text=tool))
    t.stop_reason = "answer"
    return t


def test_single_reward_sets_reward_prediction_and_correct():
    t = traj("The answer is \\boxed{6170}.")
    rb = build_scorer("math_correct")(EX, t)
    assert rb.total == 1.0 and rb.components == {"math_correct": 1.0}
    assert t.reward == rb and t.prediction == "6170" and t.metadata["correct"] is True


def test_printed_output_and_code_never_count_as_the_answer():
    # the code block's numbers and the tool's printed result are not the model's answer
    t = traj("```python\nprint(1234 * 5)\n```", "I am not sure.", tool="6170")
    build_scorer("math_correct")(EX, t)
    assert t.prediction is None and t.metadata["correct"] is False
    t = traj("```python\nprint(6170)\n```", "So it is 12.", tool="6170")
    build_scorer("math_correct")(EX, t)
    assert t.prediction == "12" and t.metadata["correct"] is False


def test_pm1_minus_one_is_wrong_and_plus_one_right():
    wrong, right = traj("\\boxed{6171}"), traj("\\boxed{6170}")
    s = build_scorer("math_pm1")
    assert s(EX, wrong).total == -1.0 and wrong.metadata["correct"] is False
    assert s(EX, right).total == 1.0 and right.metadata["correct"] is True


def test_a_format_bonus_never_makes_a_wrong_answer_correct():
    t = traj("\\boxed{6171}")  # well formatted, wrong
    rb = build_scorer({"math_correct": 1.0, "format_boxed": 0.2})(EX, t)
    assert rb.total == pytest.approx(0.2)
    assert rb.components == {"math_correct": 0.0, "format_boxed": 1.0}
    assert t.metadata["correct"] is False  # decided by the first reward, not total > 0


def test_correct_names_a_component_and_a_missing_one_is_an_error():
    t = traj("\\boxed{6171}")
    s = build_scorer({"math_correct": 1.0, "format_boxed": 0.2}, correct="format_boxed")
    s(EX, t)
    assert t.metadata["correct"] is True
    with pytest.raises(
        ConfigError, match="reward.correct names .nope.*only the components math_correct"
    ):
        build_scorer("math_correct", correct="nope")(EX, traj("\\boxed{1}"))


def test_qa_reward_keeps_its_components_and_uses_the_qa_extractor():
    t = traj("<answer>george orwell</answer>")
    rb = build_scorer("qa_f1")(QA, t)
    assert rb.components["em"] == 1.0 and rb.components["correct"] == 1.0
    assert t.prediction == "george orwell" and t.metadata["correct"] is True
    # combined QA rewards report `name/correct`, which decides correctness
    t2 = traj("<answer>orwell</answer>")
    rb2 = build_scorer({"qa_f1": 1.0, "format_boxed": 0.1})(QA, t2)
    assert rb2.components["qa_f1/correct"] == 0.0 and rb2.total > 0
    assert t2.metadata["correct"] is False


def test_toolstar_wrong_answer_scores_point_one_but_is_not_correct():
    t = traj("<think>x</think>\n<answer>\\boxed{6171}</answer>")
    rb = build_scorer("math_toolstar")(EX, t)
    assert rb.total == pytest.approx(0.1) and t.metadata["correct"] is False


def test_unknown_reward_fails_when_the_scorer_is_built():
    with pytest.raises(ConfigError, match="unknown reward 'math_corect'"):
        build_scorer({"math_corect": 1.0})
    with pytest.raises(ConfigError, match="no reward given"):
        build_scorer({})
