"""Unit tests: QA metrics, answer extraction and the search-RL rewards on hand-built trajectories."""

import pytest

from trajlab.rewards import REWARDS, compute_reward
from trajlab.rewards.qa import (
    cover_exact_match,
    exact_match,
    extract_answer_span,
    extract_qa_answer,
    normalize_answer,
    retrieval_recall,
    stage2_violation,
    token_f1,
)
from trajlab.types import Example, Segment, ToolCall, Trajectory

EX = Example(id="q1", question="Who wrote 1984?", answer="George Orwell", answers=["Eric Blair"])


def traj(*parts, calls=()):
    """parts: (source, text) pairs after a prompt; token ids are placeholders."""
    t = Trajectory(example_id="q1", stop_reason="answer")
    t.add(Segment("prompt", [1], text="PROMPT <answer> Beijing </answer>"))
    for source, text in parts:
        t.add(Segment(source, [1], text=text, logprobs=[-1.0] if source == "model" else None))
    t.tool_calls = list(calls)
    return t


def model(text):
    return traj(("model", text))


# -- metrics --------------------------------------------------------------------------


def test_normalisation_is_squad_style():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert normalize_answer("  U.S.A. ") == "usa"


def test_exact_match_takes_the_best_reference():
    assert exact_match("george orwell.", ["Eric Blair", "George Orwell"]) == 1.0
    assert exact_match("Orwell", ["George Orwell"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0
    with pytest.raises(ValueError, match="reference"):
        exact_match("x", [])


def test_token_f1_hand_values():
    # pred {paris, france}, gold {paris}: P = 1/2, R = 1, F1 = 2 * .5 * 1 / 1.5 = 2/3
    assert token_f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    # pred "the new york city" -> {new, york, city}; gold {new, york}: P 2/3, R 1 -> 0.8
    assert token_f1("the New York City", ["New York"]) == pytest.approx(0.8)
    # best reference wins: "Blair" vs "Eric Blair" -> P 1, R 1/2 -> 2/3
    assert token_f1("Blair", ["George Orwell", "Eric Blair"]) == pytest.approx(2 / 3)
    assert token_f1("London", ["Paris"]) == 0.0


def test_yes_no_must_match_exactly_in_f1():
    assert token_f1("yes", ["no"]) == 0.0
    assert token_f1("yes it is", ["yes"]) == 0.0  # would be 0.5 by token overlap
    assert token_f1("Yes.", ["yes"]) == 1.0


def test_cover_em_needs_word_boundaries():
    assert cover_exact_match("It was George Orwell, in 1949.", ["george orwell"]) == 1.0
    assert cover_exact_match("1945", ["19"]) == 0.0
    assert cover_exact_match("Orwell", ["George Orwell"]) == 0.0


def test_answer_extraction():
    assert extract_qa_answer("<answer>\\boxed{George Orwell}</answer>") == "George Orwell"
    assert extract_qa_answer("<answer> A </answer> then <answer> B </answer>") == "B"
    assert extract_qa_answer("so \\boxed{x}") == "x"
    assert extract_qa_answer("no answer here") is None
    assert extract_answer_span("<answer>  </answer>") is None
    assert extract_answer_span("<answer>\\boxed{y}</answer>") == "\\boxed{y}"


# -- generic rewards -------------------------------------------------------------------


def test_qa_rewards_report_all_metrics_and_correct():
    t = model("<think>ok</think><answer> George Orwell </answer>")
    for name, total in (("qa_em", 1.0), ("qa_f1", 1.0), ("qa_cover_em", 1.0), ("searchr1_em", 1.0)):
        r = compute_reward(name, EX, t)
        assert r.total == total, name
        assert r.components["em"] == 1.0 and r.components["correct"] == 1.0
    partial = model("<answer> Orwell the writer </answer>")
    r = compute_reward("qa_f1", EX, partial)
    # pred {orwell, writer}, gold {george, orwell}: P 1/2, R 1/2 -> 0.5
    assert r.total == pytest.approx(0.5)
    assert r.components["correct"] == 0.0 and r.components["cover_em"] == 0.0


def test_prompt_example_answers_never_count():
    # The prompt segment holds "<answer> Beijing </answer>"; only model text is read.
    t = traj(("model", "I don't know."))
    assert compute_reward("searchr1_em", Example("q", "?", answer="Beijing"), t).total == 0.0


def test_search_r1_em_ignores_boxes_but_qa_em_reads_them():
    t = model("<answer>\\boxed{George Orwell}</answer>")
    assert compute_reward("qa_em", EX, t).total == 1.0
    assert compute_reward("searchr1_em", EX, t).total == 0.0


# -- R1-Searcher ----------------------------------------------------------------------


def r1s(answer_text, searches=1, extra=""):
    parts = [("model", "<think>I need the author. ")]
    for _ in range(searches):
        parts += [
            ("model", "<|begin_of_query|> 1984 author <|end_of_query|>"),
            ("template", "\n\n<|begin_of_documents|>\n"),
            ("tool", "(1) 1984\nA novel by George Orwell.\n"),
            ("template", "<|end_of_documents|>\n\n"),
        ]
    parts.append(("model", f"Done.{extra}</think>\n\n{answer_text}"))
    return traj(*parts)


def test_r1_searcher_stage1_hand_cases():
    right, wrong = "<answer> George Orwell </answer>", "<answer> Aldous Huxley </answer>"
    assert compute_reward("r1searcher_stage1", EX, r1s(right)).total == 2.0  # 1 + .5 + .5
    assert compute_reward("r1searcher_stage1", EX, r1s(wrong)).total == 0.0  # -1 + .5 + .5
    assert compute_reward("r1searcher_stage1", EX, r1s(right, searches=0)).total == 1.5
    assert compute_reward("r1searcher_stage1", EX, r1s("no tags")).total == -0.5  # -1 + .5 + 0
    # cover-EM: the answer may contain the reference
    covering = r1s("<answer> it was George Orwell </answer>")
    assert compute_reward("r1searcher_stage1", EX, covering).total == 2.0


def test_r1_searcher_stage2_hand_cases():
    ok = r1s("<answer> Orwell the writer </answer>")
    assert compute_reward("r1searcher_stage2", EX, ok).total == pytest.approx(0.5)
    long = r1s("<answer> " + "word " * 11 + "</answer>")
    assert compute_reward("r1searcher_stage2", EX, long).total == -2.0
    echoed = r1s("<answer> George Orwell </answer>", extra=" Assistant:")
    assert compute_reward("r1searcher_stage2", EX, echoed).total == pytest.approx(-1.0)
    assert compute_reward("r1searcher_stage2", EX, r1s("no answer")).total == -2.0
    assert (
        compute_reward(
            "r1searcher_stage2", EX, r1s("<answer> George Orwell </answer>", searches=0)
        ).total
        == 1.0
    )


def test_stage2_chinese_only_counts_outside_documents():
    inside = "<|begin_of_query|>q<|end_of_query|><|begin_of_documents|>北京<|end_of_documents|></think><answer> x </answer>"
    assert stage2_violation(inside) is None
    outside = inside.replace("</think>", "北京</think>")
    assert "Chinese" in stage2_violation(outside)


# -- R1-Searcher++ ---------------------------------------------------------------------


def test_r1spp_answer_uses_its_own_tags():
    t = traj(
        (
            "model",
            "<think><internal>1984 is a novel.</internal></think> <external> 1984 author </external>",
        ),
        ("template", "\n<document>\n"),
        ("tool", "1984\nA novel by George Orwell."),
        ("template", "\n</document>\n"),
        ("model", "<answer> George Orwell </answer>"),
    )
    assert compute_reward("r1spp_answer", EX, t).total == 1.0
    unbalanced = model("<think><internal>x</think><answer> George Orwell </answer>")
    assert compute_reward("r1spp_answer", EX, unbalanced).total == -1.0  # F1 1 - 2


def test_r1spp_internal_rewards_right_answers_without_search():
    no_search = model("<think>I know it.</think><answer> George Orwell </answer>")
    assert compute_reward("r1spp_internal", EX, no_search).total == 1.0
    searched = traj(
        ("model", "<think>x</think><answer> George Orwell </answer>"),
        calls=[ToolCall("search", {"query": "1984"})],
    )
    assert compute_reward("r1spp_internal", EX, searched).total == 0.0
    wrong = model("<think>x</think><answer> Huxley </answer>")
    assert compute_reward("r1spp_internal", EX, wrong).total == 0.0


# -- Tool-Star --------------------------------------------------------------------------


def toolstar(answer, tools=("search", "python")):
    parts = [("model", "<think>plan</think>")]
    for tool in tools:
        parts += [
            ("model", f"<{tool}>x</{tool}>"),
            ("template", " <result>\n"),
            ("tool", "r"),
            ("template", "\n</result>"),
        ]
    parts.append(("model", f"<think>done</think><answer>{answer}</answer>"))
    return traj(*parts)


def test_toolstar_hierarchical_reward():
    assert compute_reward(
        "toolstar_qa", EX, toolstar("\\boxed{George Orwell}")
    ).total == pytest.approx(1.1)
    only_search = toolstar("\\boxed{George Orwell}", tools=("search",))
    assert compute_reward("toolstar_qa", EX, only_search).total == 1.0
    # F1 0.5 plus the bonus
    assert compute_reward(
        "toolstar_qa", EX, toolstar("\\boxed{Orwell the writer}")
    ).total == pytest.approx(0.6)
    assert compute_reward("toolstar_qa", EX, toolstar("\\boxed{Huxley}")).total == 0.0
    assert compute_reward("toolstar_qa", EX, toolstar("George Orwell")).total == -1.0  # no box
    no_think = traj(("model", "<answer>\\boxed{George Orwell}</answer>"))
    assert compute_reward("toolstar_qa", EX, no_think).total == -1.0


# -- retrieval recall ---------------------------------------------------------------------


def test_retrieval_recall_reads_hits_recorded_by_the_search_tool():
    ex = Example(
        "q", "?", answer="a", meta={"supporting_titles": ["Nineteen Eighty-Four", "George Orwell"]}
    )

    def hits(*titles):
        return {
            "hits": [
                {"id": t, "title": t, "rank": i, "score": 1.0} for i, t in enumerate(titles, 1)
            ]
        }

    t = traj(
        ("model", "x"),
        calls=[
            ToolCall(
                "search",
                {"query": "a"},
                metadata={"retrieved": hits("nineteen  eighty-four", "Animal Farm")},
            ),
            ToolCall("python", {"code": "print(1)"}),
        ],
    )
    assert retrieval_recall(ex, t) == 0.5
    assert retrieval_recall(ex, traj(("model", "x"))) == 0.0
    assert retrieval_recall(Example("q", "?", answer="a"), t) is None
    # as partial credit for search RL: the same number, and an error on rows without gold
    from trajlab.build import build_scorer
    from trajlab.rewards.qa import search_recall

    assert search_recall(ex, t) == 0.5
    with pytest.raises(ValueError, match="no meta.supporting_titles"):
        search_recall(Example("q", "?", answer="a"), t)
    t.segments[-1].text = "<answer>Orwell</answer>"
    rb = build_scorer({"qa_f1": 1.0, "search_recall": 0.5})(ex, t)
    assert rb.components["search_recall"] == 0.5 and rb.total == pytest.approx(0.25)
    assert t.metadata["correct"] is False  # F1 0, recall 0.5: searching is not answering


def test_every_qa_reward_is_registered():
    for name in (
        "qa_em", "qa_f1", "qa_cover_em", "searchr1_em", "r1searcher_stage1",
        "r1searcher_stage2", "r1spp_answer", "r1spp_internal", "toolstar_qa",
    ):  # fmt: skip
        assert name in REWARDS
