"""Helpers shared by the trainer tests (importable as `train_helpers`: pytest puts tests/ on
sys.path; subprocesses get PYTHONPATH=tests). Not a test module itself.

python_42 / search_paris: tool plugin factories (`tool_plugins={python: 'train_helpers:python_42'}`)
for scripted tools from trajlab.tools.fake (no sandbox, no index) that answer every call
with one fixed observation and record what they were asked in `.ran`. tool_format_reward: the learning test's toy reward for emitting the tags
protocol's call <python>...</python>.
"""

from __future__ import annotations

from trajlab.tools.fake import ScriptedTool
from trajlab.types import Example, Trajectory

OPEN, CLOSE = "<python>", "</python>"


def python_42() -> ScriptedTool:
    """A python tool whose every run prints 42."""
    return ScriptedTool("python", default="42")


def _longest_prefix_present(text: str, target: str) -> int:
    k = 0
    while k < len(target) and target[: k + 1] in text:
        k += 1
    return k


def tool_format_reward(example: Example, trajectory: Trajectory) -> float:
    """Shaped reward for calling the tool: 0.25 * (how much of '<python>' appears)
    + 0.25 * (how much of '</python>' appears after it) + 0.5 if a call actually ran.
    A model that never runs the tool stays at or below 0.5."""
    text = trajectory.model_text
    opened = _longest_prefix_present(text, OPEN)
    after = text[text.find(OPEN) + len(OPEN) :] if OPEN in text else ""
    closed = _longest_prefix_present(after, CLOSE) if after else 0
    ran = any(c.ok and c.status == "ok" for c in trajectory.tool_calls)
    return 0.25 * opened / len(OPEN) + 0.25 * closed / len(CLOSE) + 0.5 * float(ran)


def token_variety_reward(example: Example, trajectory: Trajectory) -> float:
    """Fraction of distinct model tokens: varies between any two random samples, so smoke
    tests on a random model get non-zero advantages (correctness rewards are all 0 there)."""
    ids = [t for s in trajectory.segments if s.source == "model" for t in s.token_ids]
    return len(set(ids)) / len(ids) if ids else 0.0


def search_paris() -> ScriptedTool:
    """A search tool that returns one fixed passage for every query."""
    return ScriptedTool("search", default="Doc 1(Title: Paris) Paris is the capital of France.")


def broken_tool() -> ScriptedTool:
    """A tool plugin whose backend fails when the tool is built (after the model loaded)."""
    raise RuntimeError("the tool's backend is down")
