"""Unit tests for trajlab.rewards: extraction, equivalence, each reward, combine, lookup.

Every expected value is worked out by hand in the test. Trajectories are built
from Segment/ToolCall objects; token ids are placeholders (rewards read text).
"""

from __future__ import annotations

import logging
import signal
import threading

import pytest

import trajlab.rewards.math as rmath
from trajlab.rewards import (
    REWARDS,
    VerifyConfig,
    combine,
    compute_reward,
    extract_answer,
    format_boxed,
    format_tags,
    get_reward,
    is_equivalent,
    math_correct,
    math_correct_boxed,
    math_pm1,
    math_toolstar,
    score_math,
    strip_code,
    tags_format_error,
    tool_error_penalty,
)
from trajlab.types import Example, RewardBreakdown, Segment, ToolCall, Trajectory

# -- helpers ------------------------------------------------------------------


def make_traj(*parts: tuple[str, str], calls=(), stop: str = "answer") -> Trajectory:
    """A trajectory with a prompt segment and then (source, text) segments in order."""
    t = Trajectory(example_id="ex", stop_reason=stop, tool_calls=list(calls))
    t.add(Segment("prompt", [1, 2, 3], text="What is 9 * 2? \\boxed{99} <answer>99</answer>"))
    for source, text in parts:
        t.add(Segment(source, [7] * max(1, len(text) // 4), text=text))
    return t


def model(text: str) -> Trajectory:
    return make_traj(("model", text))


def call(ok: bool, status: str, tool: str = "python") -> ToolCall:
    return ToolCall(tool=tool, args={"code": "print(1)"}, ok=ok, status=status)


EX18 = Example(id="ex", question="What is 9 * 2?", answer="18")


# -- extraction ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{18}.", "18"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("first \\boxed{3} then \\boxed{4}", "4"),  # the last one
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not grouping
        ("$\\boxed 5$.", "5"),  # brace-less form stops at $
        ("\\boxed 42 is it", "42"),
        ("\\boxed {7}", "7"),  # space before the brace
        ("\\boxed{ 8 }", "8"),  # stripped
        ("\\boxed{3} and then \\boxed{12", None),  # last box unclosed: no answer, not the earlier
        ("\\boxed{}", None),  # empty
        ("\\boxedx{3}", None),  # a different command
        ("no box at all 12", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_answer(text, "boxed") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>18</answer>", "18"),
        ("<answer>1</answer> x <answer>\n 2 \n</answer>", "2"),
        ("<answer> </answer>", None),
        ("<answer>18", None),
        ("<answer>The final answer is \\boxed{5}</answer>", "The final answer is \\boxed{5}"),
    ],
)
def test_extract_answer_tag(text, expected):
    assert extract_answer(text, "answer_tag") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("she makes $18 a day", "18"),
        ("I have $1,234.50 left", "1234.50"),
        ("it is -3/4 of it", "-3/4"),
        ("total is \u22127.", "-7"),  # unicode minus, sentence period
        ("10-3", "3"),  # a minus between numbers is subtraction, not a sign
        ("costs $-5 now", "-5"),
        ("1,2,3", "3"),  # not a thousands separator
        ("a 50% rise", "50"),
        ("x2 and y", None),  # digits inside a word are not a number
        ("2 apples and 3.25 pears", "3.25"),
        ("nothing here", None),
    ],
)
def test_extract_last_number(text, expected):
    assert extract_answer(text, "last_number") == expected


def test_auto_prefers_box_then_tag_then_number():
    assert extract_answer("7 <answer>8</answer> \\boxed{9} 10", "auto") == "9"
    assert extract_answer("7 <answer>8</answer> 10", "auto") == "8"
    assert extract_answer("7 then 10", "auto") == "10"
    assert extract_answer("no answer", "auto") is None


def test_unknown_extraction_method_lists_valid_ones():
    with pytest.raises(ValueError, match="boxed, answer_tag, last_number"):
        extract_answer("1", "first_number")


def test_strip_code_removes_fenced_and_tagged_code_including_unterminated():
    text = "a ```python\nprint(2**10)\n``` b <python>x = 99</python> c ```python\nprint(77"
    stripped = strip_code(text)
    assert "10" not in stripped and "99" not in stripped and "77" not in stripped
    assert stripped.replace(" ", "") == "abc"


# -- equivalence --------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, ref",
    [
        ("18", "18"),
        ("18.0", "18"),
        ("$18", "18"),
        ("\\$18", "18"),
        ("18,000", "18000"),
        ("18000", "18,000"),
        ("18 dollars", "18"),
        ("18\\text{ apples}", "18"),
        ("0.75", "3/4"),
        ("\\frac{3}{4}", "0.75"),
        ("-\\dfrac{3}{4}", "-0.75"),
        ("25\\%", "25"),
        ("18.", "18"),
    ],
)
def test_numeric_short_circuit_equal_without_math_verify(monkeypatch, pred, ref):
    def boom(*a, **k):
        raise AssertionError("math-verify must not be called for plain numbers")

    monkeypatch.setattr(rmath, "math_verify_equal", boom)
    assert is_equivalent(pred, ref)


@pytest.mark.parametrize("pred, ref", [("17", "18"), ("-3/4", "3/4"), ("18001", "18,000")])
def test_unequal_exact_numbers_decided_without_math_verify(monkeypatch, pred, ref):
    monkeypatch.setattr(rmath, "math_verify_equal", lambda *a, **k: pytest.fail("called"))
    assert not is_equivalent(pred, ref)


def test_missing_prediction_is_never_equivalent():
    assert not is_equivalent(None, "18")
    assert not is_equivalent("  ", "18")


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        ("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", True),
        ("x = 5", "5", True),
        ("0.3333333", "1/3", True),  # math-verify rounds to 6 places
        ("\\pi", "3.14", False),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("\\left(1, 2\\right]", "(1,2]", True),
        ("\\frac{1}{", "1/2", False),  # unparseable LaTeX: simply incorrect
    ],
)
def test_math_verify_fallback(pred, ref, expected):
    assert is_equivalent(pred, ref) is expected


def test_math_verify_from_a_worker_thread_uses_the_helper_process():
    results = []

    def work():
        results.append(is_equivalent("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}"))
        results.append(is_equivalent("\\pi", "3.14"))

    th = threading.Thread(target=work)
    th.start()
    th.join(timeout=120)
    assert results == [True, False]


def test_inline_backend_in_a_worker_thread_raises_rather_than_scoring_zero():
    # math-verify's signal.alarm timeouts refuse to run off the main thread: the
    # trap the "auto" backend exists for. It must surface, not become a 0 reward.
    errors = []

    def work():
        try:
            is_equivalent("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", VerifyConfig(backend="inline"))
        except ValueError as e:
            errors.append(str(e))

    th = threading.Thread(target=work)
    th.start()
    th.join(timeout=60)
    assert errors and "thread" in errors[0]


def test_pending_alarm_keeps_math_verify_out_of_process():
    # pytest-timeout itself arms ITIMER_REAL around each test: the very alarm
    # math-verify's signal.alarm(0) would silently cancel. Park it, then restore it.
    saved = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        assert rmath._can_run_inline()
        signal.setitimer(signal.ITIMER_REAL, 1000.0)
        assert not rmath._can_run_inline()
    finally:
        signal.setitimer(signal.ITIMER_REAL, *saved)


def test_inline_backend_in_the_main_thread():
    saved = signal.setitimer(signal.ITIMER_REAL, 0)  # park pytest-timeout's alarm
    try:
        cfg = VerifyConfig(backend="inline")
        assert is_equivalent("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", cfg)
        assert not is_equivalent("\\pi", "3.14", cfg)
    finally:
        signal.setitimer(signal.ITIMER_REAL, *saved)


HANGING_HELPER = (
    "import sys, time; sys.stdout.write('{\"ready\": true}\\n'); sys.stdout.flush(); time.sleep(60)"
)


def test_hung_helper_is_killed_and_scores_incorrect(monkeypatch, caplog):
    verifier = rmath._VerifierProcess()
    monkeypatch.setattr(rmath, "_VERIFIER", verifier)
    monkeypatch.setattr(rmath, "_WORKER_CODE", HANGING_HELPER)
    cfg = VerifyConfig(backend="subprocess", hard_timeout_s=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger="trajlab.rewards.math"):
            assert is_equivalent("\\pi", "3.14", cfg) is False
        assert verifier._proc is None  # killed, restarted on the next request
        assert "did not answer" in caplog.text
    finally:
        verifier.close()


def test_dead_helper_raises_with_the_fix(monkeypatch):
    verifier = rmath._VerifierProcess()
    monkeypatch.setattr(rmath, "_VERIFIER", verifier)
    monkeypatch.setattr(rmath, "_WORKER_CODE", "import sys; sys.exit(3)")
    with pytest.raises(RuntimeError, match="exited with code 3.*import math_verify"):
        is_equivalent("\\pi", "3.14", VerifyConfig(backend="subprocess"))


def test_verify_config_validates():
    with pytest.raises(ValueError, match="auto, inline, subprocess"):
        VerifyConfig(backend="thread")
    with pytest.raises(ValueError, match="whole number"):
        VerifyConfig(timeout_s=0.5)


# -- math rewards -------------------------------------------------------------


def test_math_rewards_on_a_boxed_right_answer():
    t = model("9 * 2 = 18, so \\boxed{18}")
    assert score_math(EX18, t) == (True, "18")
    assert math_correct(EX18, t) == 1.0
    assert math_correct_boxed(EX18, t) == 1.0
    assert math_pm1(EX18, t) == 1.0


def test_math_rewards_on_a_wrong_answer():
    t = model("\\boxed{19}")
    assert score_math(EX18, t) == (False, "19")
    assert math_correct(EX18, t) == 0.0
    assert math_pm1(EX18, t) == -1.0


def test_unboxed_answer_counts_for_auto_but_not_for_box_only_rewards():
    t = model("The answer is 18.")
    assert math_correct(EX18, t) == 1.0  # auto falls back to the last number
    assert math_correct_boxed(EX18, t) == 0.0
    assert math_pm1(EX18, t) == -1.0  # CIR/ToRL: no box is -1


def test_box_printed_by_code_is_not_the_model_answer():
    t = make_traj(
        ("model", "```python\nprint('\\\\boxed{18}')\n```"),
        ("tool", "\n```output\n\\boxed{18}\n```\n"),
        ("model", "Done."),
        calls=[call(True, "ok")],
    )
    assert score_math(EX18, t) == (False, None)
    assert math_pm1(EX18, t) == -1.0
    assert format_boxed(EX18, t) == 0.0


def test_prompt_text_is_never_read():
    t = model("I am not sure.")  # the prompt segment holds \boxed{99} and <answer>99</answer>
    assert score_math(Example(id="ex", question="q", answer="99"), t) == (False, None)


def test_any_accepted_reference_counts():
    ex = Example(id="ex", question="q", answer="18", answers=["18", "\\frac{36}{2}", "eighteen"])
    assert math_correct(ex, model("\\boxed{eighteen}")) == 1.0
    ex2 = Example(id="ex", question="q", answers=["7", "0.5"])
    assert math_correct(ex2, model("\\boxed{1/2}")) == 1.0


def test_example_without_reference_raises_instead_of_scoring_zero():
    with pytest.raises(ValueError, match="no reference answer"):
        math_correct(Example(id="x", question="q"), model("\\boxed{1}"))


# -- format rewards -----------------------------------------------------------


def tags_traj(answer: str = "<answer>\\boxed{18}</answer>", stop: str = "answer") -> Trajectory:
    return make_traj(
        ("model", "<think>compute 9*2</think>\n<python>print(9*2)</python>"),
        ("tool", " <result>\n18\n</result>"),
        ("model", "\n<think>it is 18</think>\n" + answer),
        calls=[call(True, "ok")],
        stop=stop,
    )


def test_format_boxed():
    assert format_boxed(EX18, model("so \\boxed{3}")) == 1.0
    assert format_boxed(EX18, model("so 3")) == 0.0
    assert format_boxed(EX18, model("so \\boxed{3")) == 0.0


def test_format_tags_accepts_a_tool_star_response():
    t = tags_traj()
    assert tags_format_error(t.response_text) is None
    assert format_tags(EX18, t) == 1.0


@pytest.mark.parametrize(
    "text, reason",
    [
        ("<answer>\\boxed{1}</answer>", "<think>"),  # no think at all
        ("<think>a</think><think>b<answer>\\boxed{1}</answer>", "<think>"),  # unbalanced
        ("<think>a</think><answer>\\boxed{1}</answer><answer>\\boxed{2}</answer>", "exactly one"),
        ("<think>a</think></answer>\\boxed{1}<answer>", "before"),
        ("<think>a</think><answer>1</answer>", "boxed"),
        ("<think>a</think><python>x</python><answer>\\boxed{1}</answer>", "<result>"),
        ("<think>a</think><python>x<result>1</result><answer>\\boxed{1}</answer>", "</python>"),
        (
            "<think>a</think><search>q</search> <result>d</result> <search>r</search>"
            "<answer>\\boxed{1}</answer>",
            "<search>",
        ),
    ],
)
def test_format_tags_rejections(text, reason):
    error = tags_format_error(text)
    assert error is not None and reason in error
    assert format_tags(EX18, model(text)) == 0.0


def test_format_tags_ignores_the_prompt():
    t = make_traj(("model", "no tags"))
    assert format_tags(EX18, t) == 0.0


@pytest.mark.parametrize(
    "calls, expected",
    [
        ([], 0.0),
        ([call(True, "ok")], 0.0),
        ([call(False, "error")], -0.5),
        ([call(False, "error"), call(True, "ok")], 0.0),
        ([call(True, "ok"), call(False, "timeout")], -0.5),
        ([call(False, "error"), call(False, "parse_error")], -0.5),  # the parse error never ran
        ([call(True, "ok"), call(False, "limit")], 0.0),  # refused by budget: not executed
        ([call(False, "error", tool="search")], 0.0),  # not code
    ],
)
def test_tool_error_penalty(calls, expected):
    assert tool_error_penalty(EX18, make_traj(("model", "x"), calls=calls)) == expected


def test_math_toolstar_hierarchy():
    right = math_toolstar(EX18, tags_traj())
    assert right.total == 1.0 and right.components["correct"] == 1.0
    wrong = math_toolstar(EX18, tags_traj("<answer>\\boxed{17}</answer>"))
    assert wrong.total == 0.1 and wrong.components["correct"] == 0.0  # 0.1 is not correct
    assert math_toolstar(EX18, tags_traj(stop="length")).total == 0.0  # no end of answer
    assert math_toolstar(EX18, tags_traj("<answer>18</answer>")).total == 0.0  # no box in answer
    assert math_toolstar(EX18, model("\\boxed{18}")).total == 0.0  # format fails


# -- combine, lookup, checks --------------------------------------------------


def test_combine_is_the_weighted_sum_with_unweighted_components():
    torl = combine({"math_pm1": 1.0, "tool_error_penalty": 1.0})
    t = make_traj(("model", "\\boxed{18}"), calls=[call(False, "error")])
    out = torl(EX18, t)
    assert out == RewardBreakdown(
        total=0.5, components={"math_pm1": 1.0, "tool_error_penalty": -0.5}
    )

    mixed = combine({"math_correct": 2.0, "format_boxed": 0.5})
    out = mixed(EX18, model("\\boxed{17}"))  # wrong but boxed: 2*0 + 0.5*1
    assert out.total == 0.5 and out.components == {"math_correct": 0.0, "format_boxed": 1.0}
    assert "math_correct=2" in mixed.__name__


def test_combine_flattens_nested_breakdowns(monkeypatch):
    def nested(example, trajectory):
        return RewardBreakdown(total=3.0, components={"a": 1.0, "b": 2.0})

    monkeypatch.setitem(REWARDS, "nested", nested)
    out = combine({"nested": 2.0, "format_boxed": 1.0})(EX18, model("\\boxed{1}"))
    assert out.total == 7.0
    assert out.components == {"nested": 3.0, "nested/a": 1.0, "nested/b": 2.0, "format_boxed": 1.0}


def test_combine_rejects_empty_unknown_and_infinite():
    with pytest.raises(ValueError, match="at least one"):
        combine({})
    with pytest.raises(ValueError, match="valid names"):
        combine({"math_corect": 1.0})
    with pytest.raises(ValueError, match="finite"):
        combine({"math_pm1": float("inf")})


def test_get_reward_errors_list_valid_names():
    assert get_reward("math_pm1") is math_pm1
    with pytest.raises(ValueError) as err:
        get_reward("accuracy")
    for name in REWARDS:
        assert name in str(err.value)


def test_get_reward_plugin():
    assert get_reward("trajlab.rewards.format:format_boxed") is format_boxed
    with pytest.raises(ValueError, match="cannot load reward plugin"):
        get_reward("trajlab.rewards.format:nope")
    with pytest.raises(ValueError, match="cannot load reward plugin"):
        get_reward("no_such_module_xyz:f")


def test_compute_reward_checks_return_values():
    assert compute_reward("math_pm1", EX18, model("\\boxed{18}")) == RewardBreakdown(
        total=1.0, components={"math_pm1": 1.0}
    )
    with pytest.raises(ValueError, match="finite"):
        compute_reward(lambda e, t: float("nan"), EX18, model("x"))
    with pytest.raises(TypeError, match="float or a RewardBreakdown"):
        compute_reward(lambda e, t: "1.0", EX18, model("x"))
    with pytest.raises(TypeError):
        compute_reward(lambda e, t: True, EX18, model("x"))


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_shipped_reward_returns_a_finite_float(name):
    # gold titles too, so rewards that read them (search_recall) have what they need
    example = Example(
        id="ex", question=EX18.question, answer="18", meta={"supporting_titles": ["Nine"]}
    )
    value = compute_reward(name, example, tags_traj())
    assert isinstance(value.total, float)
