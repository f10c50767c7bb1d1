"""Unit tests for trajlab.tasks: the JSONL loader, synthetic tasks, load_task and prompts.

Synthetic answers are recomputed here by independent methods (eval of the
expression text, trial division, Euclid by hand, closed forms), never by
calling the generator's own helpers.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from trajlab.rewards import extract_answer, tags_format_error
from trajlab.tasks import (
    PROMPTS,
    PUZZLE_KINDS,
    TASKS,
    load_jsonl_task,
    load_task,
    make_arith,
    make_puzzles,
    render_messages,
    split_of,
)
from trajlab.types import Example

# -- JSONL loader -------------------------------------------------------------


def write_lines(tmp_path, *lines: str, name: str = "task.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(**kw) -> str:
    return json.dumps(kw)


def test_loads_rows_into_examples(tmp_path):
    path = write_lines(
        tmp_path,
        row(id="a", question="1+1?", answer="2", meta={"level": 1}),
        "",  # blank lines are ignored
        row(id=7, question="Capital of France?", answers=["Paris", "paris"]),
        row(id="c", question="2*9?", answer=18, source="mine"),  # number answer, extra key
    )
    examples = load_jsonl_task(path)
    assert examples == [
        Example(id="a", question="1+1?", answer="2", meta={"level": 1}),
        Example(id="7", question="Capital of France?", answers=["Paris", "paris"]),
        Example(id="c", question="2*9?", answer="18", meta={"source": "mine"}),
    ]
    assert [e.id for e in load_jsonl_task(path, limit=2)] == ["a", "7"]
    assert load_jsonl_task(path, limit=0) == []


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ('{"id": "b", "question": "q", "answer": "1"', "not valid JSON"),
        ('["id", "question"]', "must be a JSON object"),
        (row(question="q", answer="1"), "missing `id`"),
        (row(id="b", answer="1"), "`question`"),
        (row(id="b", question="  ", answer="1"), "`question`"),
        (row(id="b", question="q"), "no reference"),
        (row(id="b", question="q", answers=[]), "no reference"),
        (row(id="b", question="q", answers="1"), "`answers` must be a list"),
        (row(id="b", question="q", answer=["1"]), "`answer` must be a string or a number"),
        (row(id="b", question="q", answer=""), "`answer` is empty"),
        (row(id="b", question="q", answer="1", meta=[1]), "`meta` must be an object"),
        (row(id="b", question="q", answer="1", level=2, meta={"level": 3}), "clashes"),
        (row(id=True, question="q", answer="1"), "`id`"),
    ],
)
def test_bad_row_error_names_file_line_problem_and_schema(tmp_path, bad_line, problem):
    path = write_lines(tmp_path, row(id="a", question="q", answer="1"), bad_line)
    with pytest.raises(ValueError) as err:
        load_jsonl_task(path)
    message = str(err.value)
    assert f"{path}:2:" in message
    assert problem in message
    assert '"question": str' in message  # the expected schema


def test_duplicate_ids_are_rejected_with_both_lines(tmp_path):
    path = write_lines(
        tmp_path,
        row(id="a", question="q1", answer="1"),
        row(id="b", question="q2", answer="2"),
        row(id="a", question="q3", answer="3"),
    )
    with pytest.raises(ValueError, match=r":3: duplicate id 'a' \(first on line 1\)"):
        load_jsonl_task(path)


def test_skip_mode_logs_and_keeps_good_rows(tmp_path, caplog):
    path = write_lines(
        tmp_path,
        row(id="a", question="q1", answer="1"),
        "{oops",
        row(id="a", question="dup", answer="9"),
        row(id="b", question="q2", answer="2"),
    )
    with caplog.at_level(logging.WARNING, logger="trajlab.tasks.jsonl"):
        examples = load_jsonl_task(path, on_error="skip")
    assert [(e.id, e.question) for e in examples] == [("a", "q1"), ("b", "q2")]
    assert f"{path}:2:" in caplog.text and f"{path}:3:" in caplog.text
    assert "skipped 2 bad row(s), kept 2" in caplog.text


def test_loader_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_jsonl_task(tmp_path / "missing.jsonl")
    path = write_lines(tmp_path, row(id="a", question="q", answer="1"))
    with pytest.raises(ValueError, match="raise, skip"):
        load_jsonl_task(path, on_error="ignore")


# -- load_task ----------------------------------------------------------------


def test_load_task_reads_a_jsonl_path(tmp_path):
    path = write_lines(
        tmp_path, row(id="a", question="q", answer="1"), row(id="b", question="r", answer="2")
    )
    assert [e.id for e in load_task(str(path))] == ["a", "b"]
    assert [e.id for e in load_task(path, n=1)] == ["a"]
    with pytest.raises(ValueError, match="only on_error"):
        load_task(path, scale=2)


def test_load_task_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(ValueError) as err:
        load_task("gsm9k")
    assert "arith" in str(err.value) and "puzzles" in str(err.value) and ".jsonl" in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_task(str(tmp_path / "nope.jsonl"))


def test_load_task_builtin_passes_options():
    examples = load_task("arith", split="train", n=3, seed=4, word_prob=0.0)
    assert examples == make_arith(n=3, split="train", seed=4, word_prob=0.0)
    assert len(load_task("puzzles")) == 100  # default size


# -- synthetic tasks: determinism, splits, options ----------------------------


@pytest.mark.parametrize("task", sorted(TASKS))
def test_synthetic_is_deterministic_and_seeded(task):
    a = load_task(task, split="train", n=20, seed=3)
    assert a == load_task(task, split="train", n=20, seed=3)
    assert [e.question for e in a] != [
        e.question for e in load_task(task, split="train", n=20, seed=4)
    ]
    assert len({e.id for e in a}) == 20 and len({e.question for e in a}) == 20
    assert all(e.answer is not None and re.fullmatch(r"-?\d+", e.answer) for e in a)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_train_and_test_never_share_a_question(task):
    train = {
        e.question for seed in (0, 1) for e in load_task(task, split="train", n=150, seed=seed)
    }
    test = {e.question for seed in (0, 1) for e in load_task(task, split="test", n=150, seed=seed)}
    assert train.isdisjoint(test)
    assert all(split_of(q) == "test" for q in test) and all(split_of(q) == "train" for q in train)


def test_synthetic_option_and_split_errors():
    with pytest.raises(ValueError, match="train, test"):
        make_arith(n=1, split="valid")
    with pytest.raises(ValueError, match="valid: .*max_digits"):
        make_arith(n=1, digits=5)
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        make_arith(n=1, min_digits=6, max_digits=4)
    with pytest.raises(ValueError, match="valid: digit_sum_power"):
        make_puzzles(n=1, kinds=("sudoku",))
    with pytest.raises(ValueError, match="scale"):
        make_puzzles(n=1, scale=0)


def test_too_small_a_question_space_raises_instead_of_looping():
    # one-digit single numbers: only "What is 1?" ... "What is 9?" exist
    tiny = dict(
        min_digits=1, max_digits=1, min_terms=1, max_terms=1, product_prob=0.0, word_prob=0.0
    )
    with pytest.raises(ValueError, match="distinct"):
        make_arith(n=50, split="train", **tiny)


# -- synthetic tasks: answers recomputed independently ------------------------


def _word_answer(style: str, nums: list[int]) -> int:
    if style == "word0":  # crates * bolts + loose
        return nums[0] * nums[1] + nums[2]
    if style == "word1":  # per day * days - sold
        return nums[0] * nums[1] - nums[2]
    return nums[0] * nums[1] + nums[2] * nums[3]  # two prices


def test_arith_answers_match_the_question_text():
    examples = make_arith(n=60, split="test", seed=11)
    assert {e.meta["style"] for e in examples} >= {"expression", "word0", "word1", "word2"}
    for e in examples:
        if e.meta["style"] == "expression":
            expr = re.fullmatch(r"What is ([\d *+-]+)\?", e.question).group(1)
            assert int(e.answer) == eval(expr, {"__builtins__": {}})  # digits and + - * only
            assert "*" in expr  # at least one product
        else:
            nums = [int(x) for x in re.findall(r"\d+", e.question)]
            assert nums == e.meta["params"]["numbers"]
            assert int(e.answer) == _word_answer(e.meta["style"], nums)
            assert int(e.answer) >= 0


def test_arith_respects_digit_ranges():
    for e in make_arith(n=40, split="train", seed=2, min_digits=2, max_digits=3, word_prob=0.0):
        for number in re.findall(r"\d+", e.question):
            assert 10 <= int(number) <= 999


def _primes_up_to(n: int) -> list[int]:
    primes: list[int] = []
    for k in range(2, n + 1):
        if all(k % p for p in primes if p * p <= k):
            primes.append(k)
    return primes


def _euclid(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _recompute(kind: str, p: dict, primes: list[int]) -> int:
    if kind == "digit_sum_power":
        value = 1
        for _ in range(p["exp"]):
            value *= p["base"]
        total = 0
        while value:
            value, digit = divmod(value, 10)
            total += digit
        return total
    if kind == "count_primes":
        return sum(1 for q in primes if q < p["n"])
    if kind == "mod_power":
        r = 1
        for _ in range(p["exp"]):
            r = r * p["base"] % p["mod"]
        return r
    if kind == "gcd":
        return _euclid(p["a"], p["b"])
    if kind == "lcm":
        out = 1
        for k in p["numbers"]:
            out = out * k // _euclid(out, k)
        return out
    if kind == "multiples_sum":  # inclusion-exclusion with closed-form sums of multiples

        def s(k: int) -> int:
            m = (p["n"] - 1) // k
            return k * m * (m + 1) // 2

        lcm = p["a"] * p["b"] // _euclid(p["a"], p["b"])
        return s(p["a"]) + s(p["b"]) - s(lcm)
    if kind == "arithmetic_series":
        return sum(p["first"] + i * p["step"] for i in range(p["count"]))
    raise AssertionError(kind)


def test_puzzle_answers_recomputed_independently():
    examples = make_puzzles(n=70, split="test", seed=5) + make_puzzles(n=30, split="train", seed=5)
    assert {e.meta["kind"] for e in examples} == set(PUZZLE_KINDS)
    primes = _primes_up_to(20000)
    for e in examples:
        params = e.meta["params"]
        assert int(e.answer) == _recompute(e.meta["kind"], params, primes), e.question
        if e.meta["kind"] == "arithmetic_series":  # the step is shown by the first terms
            first, step = params["first"], params["step"]
            assert f"starts {first}, {first + step}, {first + 2 * step}, ..." in e.question
            params = {"count": params["count"]}
        for value in params.values():  # the question states every parameter
            for v in value if isinstance(value, list) else [value]:
                assert str(v) in e.question


def test_puzzle_known_values():
    # hand-checked facts: 25 primes below 100; digit sum of 2^15 = 32768 is 26
    primes = _primes_up_to(100)
    assert _recompute("count_primes", {"n": 100}, primes) == 25
    assert _recompute("digit_sum_power", {"base": 2, "exp": 15}, primes) == 26
    assert _recompute("multiples_sum", {"a": 3, "b": 5, "n": 10}, primes) == 23  # 3+5+6+9
    only = make_puzzles(n=5, split="train", seed=0, kinds=["gcd"])
    assert {e.meta["kind"] for e in only} == {"gcd"}


def test_puzzle_scale_makes_numbers_bigger():
    small = make_puzzles(n=60, split="train", seed=1, kinds=["count_primes"])
    big = make_puzzles(n=60, split="train", seed=1, kinds=["count_primes"], scale=3)
    assert max(e.meta["params"]["n"] for e in small) <= 20000
    assert max(e.meta["params"]["n"] for e in big) > 20000


# -- prompts ------------------------------------------------------------------

Q = Example(id="q", question="What is \\frac{1}{2} of {x}?", answer="1")


def test_render_messages_shapes_and_few_shot_defaults():
    code = render_messages(Q, "code")
    assert [m["role"] for m in code] == ["system", "user", "assistant", "user"]
    assert code[-1]["content"] == Q.question  # braces survive untouched
    assert [m["role"] for m in render_messages(Q, "code", few_shot=False)] == ["system", "user"]
    assert [m["role"] for m in render_messages(Q, "tags")] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert [m["role"] for m in render_messages(Q, "none")] == ["system", "user"]
    assert [m["role"] for m in render_messages(Q, "none", few_shot=True)][-2:] == [
        "assistant",
        "user",
    ]
    assert [m["role"] for m in render_messages(Q, "native")] == ["system", "user"]


def test_native_has_no_few_shot_and_unknown_protocol_lists_valid():
    with pytest.raises(ValueError, match="few_shot=False"):
        render_messages(Q, "native", few_shot=True)
    with pytest.raises(ValueError, match="code, tags, native, none"):
        render_messages(Q, "json")


def test_merge_system_for_templates_without_a_system_role():
    merged = render_messages(Q, "code", few_shot=False, merge_system=True)
    assert [m["role"] for m in merged] == ["user"]
    assert merged[0]["content"].startswith(PROMPTS["code"].system)
    assert merged[0]["content"].endswith(Q.question)


@pytest.mark.parametrize("protocol", sorted(PROMPTS))
def test_every_prompt_asks_for_a_boxed_answer(protocol):
    assert "\\boxed{" in PROMPTS[protocol].system


def test_worked_examples_are_right_and_in_their_protocol_format():
    assert 1234 * 56 + 789 == 69893
    for protocol, template in PROMPTS.items():
        if template.example_response is None:
            continue
        assert extract_answer(template.example_response, "boxed") == "69893", protocol
    assert "```python\n" in PROMPTS["code"].example_response
    assert "```output\n69893\n```" in PROMPTS["code"].example_response
    assert tags_format_error(PROMPTS["tags"].example_response) is None  # passes Tool-Star's check
