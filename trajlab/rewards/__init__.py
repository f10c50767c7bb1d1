"""Rewards: plain functions `(example, trajectory) -> float | RewardBreakdown`, picked by name.

How it is used:

    from trajlab.rewards import REWARDS, combine, compute_reward, get_reward
    reward = get_reward("math_pm1")                               # a function
    torl = combine({"math_pm1": 1.0, "tool_error_penalty": 1.0})  # ToRL with its code penalty
    breakdown = compute_reward(torl, example, trajectory)         # RewardBreakdown(total, components)

Adding a reward: write a function in a module here, add it to REWARDS, test it on
hand-built trajectories. A user plugin can be named "package.module:function".

Rules every reward keeps (STYLE.md, principle 11): a reward never swallows its own
errors. A wrong, missing or unparseable model answer is data and scores as
incorrect; a broken reward (a task row without a reference, a missing
dependency, a non-finite value) raises. A silently zero reward is the worst RL bug.

What this package does not do: decide where the reward lands in the sequence,
normalise it across a group, or filter trajectories; that is trajlab/algos.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

# Not `import math`: importing the submodule trajlab.rewards.math rebinds the
# package-level name `math` to it.
from math import isfinite

from trajlab.rewards.format import (
    format_boxed,
    format_tags,
    has_boxed_answer,
    math_toolstar,
    tags_format_error,
    tool_error_penalty,
)
from trajlab.rewards.math import (
    EXTRACTION_METHODS,
    VerifyConfig,
    extract_answer,
    is_equivalent,
    judge,
    math_correct,
    math_correct_boxed,
    math_pm1,
    score_math,
    strip_code,
)
from trajlab.rewards.qa import (
    QA_REWARDS,
    cover_exact_match,
    exact_match,
    extract_qa_answer,
    normalize_answer,
    retrieval_recall,
    token_f1,
)
from trajlab.types import Example, RewardBreakdown, Trajectory

RewardFn = Callable[[Example, Trajectory], "float | RewardBreakdown"]

REWARDS: dict[str, RewardFn] = {
    "math_correct": math_correct,  # 1/0, auto extraction (box, <answer>, last number)
    "math_correct_boxed": math_correct_boxed,  # 1/0, box only
    "math_pm1": math_pm1,  # +1/-1, box only (CIR, ToRL)
    "math_toolstar": math_toolstar,  # 0 / 0.1 / 1 hierarchical (Tool-Star, math)
    "format_boxed": format_boxed,  # 1/0: a complete \boxed{} outside code
    "format_tags": format_tags,  # 1/0: Tool-Star's tags format check
    "tool_error_penalty": tool_error_penalty,  # -0.5 / 0 (ToRL's code penalty)
    # QA (rewards/qa.py); each but search_recall reports em, f1, cover_em and correct
    **QA_REWARDS,  # qa_em, qa_f1, qa_cover_em, searchr1_em, r1searcher_stage1/2,
    # r1spp_answer, r1spp_internal, toolstar_qa, search_recall (partial credit)
}


def get_reward(name: str) -> RewardFn:
    """The reward called `name` in REWARDS, or a user plugin given as "module:function"."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot load reward plugin {name!r}: {e}") from e
        if not callable(fn):
            raise ValueError(f"reward plugin {name!r} is not callable")
        return fn
    raise ValueError(
        f"unknown reward {name!r}; valid names: {', '.join(sorted(REWARDS))} "
        "(or a plugin written as 'package.module:function')"
    )


def _as_breakdown(value: object, name: str) -> RewardBreakdown:
    """Check a reward's return value and wrap a float as RewardBreakdown(total, {name: total})."""
    if isinstance(value, RewardBreakdown):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"reward {name!r} returned {type(value).__name__}; a reward must return a float "
            "or a RewardBreakdown"
        )
    if not isfinite(value):
        raise ValueError(f"reward {name!r} returned {value}; rewards must be finite")
    return RewardBreakdown(total=float(value), components={name: float(value)})


def _name_of(reward: str | RewardFn) -> str:
    return reward if isinstance(reward, str) else getattr(reward, "__name__", repr(reward))


def compute_reward(
    reward: str | RewardFn, example: Example, trajectory: Trajectory
) -> RewardBreakdown:
    """Run one reward (by name or function) and return a checked RewardBreakdown."""
    fn = get_reward(reward) if isinstance(reward, str) else reward
    return _as_breakdown(fn(example, trajectory), _name_of(reward))


def combine(weights: Mapping[str, float]) -> Callable[[Example, Trajectory], RewardBreakdown]:
    """A reward that is the weighted sum of named rewards.

    total = sum(weight * value); `components` holds each reward's unweighted
    value under its name (a nested breakdown's parts appear as "name/part"), so
    logs show what each part contributed before weighting.
    """
    if not weights:
        raise ValueError("combine() needs at least one {reward_name: weight}")
    parts = {name: (get_reward(name), float(w)) for name, w in weights.items()}
    for name, (_, w) in parts.items():
        if not isfinite(w):
            raise ValueError(f"combine(): weight of {name!r} is {w}; weights must be finite")

    def combined(example: Example, trajectory: Trajectory) -> RewardBreakdown:
        total, components = 0.0, {}
        for name, (fn, w) in parts.items():
            part = _as_breakdown(fn(example, trajectory), name)
            total += w * part.total
            components[name] = part.total
            for sub, value in part.components.items():
                if sub != name:
                    components[f"{name}/{sub}"] = value
        return RewardBreakdown(total=total, components=components)

    combined.__name__ = "combine(" + ", ".join(f"{n}={w:g}" for n, (_, w) in parts.items()) + ")"
    return combined


__all__ = [
    "EXTRACTION_METHODS",
    "QA_REWARDS",
    "cover_exact_match",
    "exact_match",
    "extract_qa_answer",
    "normalize_answer",
    "retrieval_recall",
    "token_f1",
    "REWARDS",
    "RewardFn",
    "VerifyConfig",
    "combine",
    "compute_reward",
    "extract_answer",
    "format_boxed",
    "format_tags",
    "get_reward",
    "has_boxed_answer",
    "is_equivalent",
    "judge",
    "math_correct",
    "math_correct_boxed",
    "math_pm1",
    "math_toolstar",
    "score_math",
    "strip_code",
    "tags_format_error",
    "tool_error_penalty",
]
