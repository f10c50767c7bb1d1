"""Format checks and tool-use shaping: does the trajectory have the shape the protocol asks for?

How it is used: `format_boxed`, `format_tags` and `tool_error_penalty` are reward
functions `(example, trajectory) -> float`, picked by name from `REWARDS` and
usually mixed with a correctness reward through `combine`. `tags_format_error`
returns the reason a text breaks the tags format (or None), for debugging and
for the viewer.

Sources:
* `format_tags` is Tool-Star's format check (arXiv 2505.16410, `validate_format`
  in its `re_search.py`): balanced <think> tags (at least one pair), exactly one
  <answer>...</answer> holding a `\\boxed{`, and every <python> / <search>
  followed, in order, by its closing tag, <result> and </result>.
* `math_toolstar` is Tool-Star's hierarchical math reward (`re_search_math.py`):
  0 for a format failure, a missing box or no end of answer (over-length),
  1.0 for a right answer, 0.1 for a wrong but well-formed one.
* `tool_error_penalty` is ToRL's optional code penalty (arXiv 2503.23383,
  `execution_error_penalty`): -0.5 when the last code that actually ran failed.

Departures: `format_tags` reads the whole response (model and tool segments),
because the <result> tags are written by the tool side, not the model; answer
extraction (math.py) reads the model's text only. Tool-Star's check scores -1 on
failure; here a format reward is 1/0 and the caller chooses signs and weights.

What it does not do: judge correctness, or check the `code` protocol's fences
(CIR left its code-block validator switched off; so do we).
"""

from __future__ import annotations

from trajlab.rewards.math import extract_answer_tag, extract_boxed, judge, strip_code
from trajlab.types import Example, RewardBreakdown, Trajectory

TOOL_TAGS = ("python", "search")

# Tool-call statuses that mean the code never ran (see trajlab/tools/base.py):
# ToRL penalises a failed execution, not a malformed or refused call.
NOT_EXECUTED = frozenset({"parse_error", "unknown_tool", "limit", "bad_args"})
CODE_TOOLS = frozenset({"python"})


def has_boxed_answer(text: str) -> bool:
    """True if the text outside code blocks ends with a complete \\boxed{} answer."""
    return extract_boxed(strip_code(text)) is not None


def _follows_in_order(text: str, start: int, markers: tuple[str, ...]) -> bool:
    pos = start
    for marker in markers:
        pos = text.find(marker, pos)
        if pos < 0:
            return False
        pos += len(marker)
    return True


def tags_format_error(text: str, require_think: bool = True) -> str | None:
    """Why `text` breaks the Tool-Star tags format, or None if it is well formed."""
    if require_think:
        opened, closed = text.count("<think>"), text.count("</think>")
        if opened == 0 or opened != closed:
            return f"need balanced <think> tags, found {opened} <think> and {closed} </think>"
    n_open, n_close = text.count("<answer>"), text.count("</answer>")
    if n_open != 1 or n_close != 1:
        return f"need exactly one <answer>...</answer>, found {n_open} <answer> and {n_close} </answer>"
    start, end = text.index("<answer>"), text.index("</answer>")
    if end < start:
        return "</answer> comes before <answer>"
    if "\\boxed{" not in text[start:end]:
        return "the <answer> holds no \\boxed{...}"
    for tag in TOOL_TAGS:
        opening, closing = f"<{tag}>", f"</{tag}>"
        if text.count(opening) != text.count(closing):
            return f"{text.count(opening)} {opening} but {text.count(closing)} {closing}"
        pos = text.find(opening)
        while pos >= 0:
            if not _follows_in_order(text, pos, (closing, "<result>", "</result>")):
                return f"a {opening} is not followed by {closing}, <result> and </result>"
            pos = text.find(opening, pos + len(opening))
    return None


def format_boxed(example: Example, trajectory: Trajectory) -> float:
    """1.0 if the model wrote a complete \\boxed{} answer outside its code, else 0.0."""
    return 1.0 if has_boxed_answer(trajectory.model_text) else 0.0


def format_tags(example: Example, trajectory: Trajectory) -> float:
    """1.0 if the response passes Tool-Star's tags format check, else 0.0."""
    return 1.0 if tags_format_error(trajectory.response_text) is None else 0.0


def tool_error_penalty(example: Example, trajectory: Trajectory) -> float:
    """-0.5 if the last code execution failed (error, timeout, ...), else 0.0 (ToRL).

    Calls that never ran (unparseable, over budget, unknown tool) are skipped;
    a trajectory without executed code gets no penalty.
    """
    executed = [
        c for c in trajectory.tool_calls if c.tool in CODE_TOOLS and c.status not in NOT_EXECUTED
    ]
    if executed and not executed[-1].ok:
        return -0.5
    return 0.0


def math_toolstar(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    """Tool-Star's math reward: 0 if malformed or unfinished, 1.0 if right, 0.1 if wrong.

    The breakdown's `correct` component is 1 only for a right answer, so the 0.1 of a
    well-formed wrong answer never counts as correct in accuracy."""

    def result(value: float) -> RewardBreakdown:
        return RewardBreakdown(
            total=value, components={"math_toolstar": value, "correct": float(value == 1.0)}
        )

    if trajectory.stop_reason != "answer":
        return result(0.0)  # Tool-Star gives 0 to a response without EOS (cut by the length budget)
    if tags_format_error(trajectory.response_text) is not None:
        return result(0.0)
    answer = extract_answer_tag(strip_code(trajectory.model_text))
    prediction = extract_boxed(answer) if answer is not None else None
    if prediction is None:
        return result(0.0)
    return result(1.0 if judge(example, prediction) else 0.1)
