"""Length-budget rewards: ThinkPrune's hard limit with a shrinking schedule, and soft
length penalties.

How it is used. The reward stage computes each trajectory's correctness reward and length
(the trainer decides what counts: model tokens for a thinking budget, or all response
tokens for a context budget), then:
    limit = thinkprune_limit(step, limits=(4000, 3000, 2000), starts=(0, s1, s2))
    rewards = length_limited_reward(rewards, lengths, limit)          # hard limit
    rewards = rewards + soft_length_penalty(lengths, budget, coef)    # or a soft one
    rewards = rewards + group_length_reward(lengths, correct, group_ids)  # Kimi k1.5 style

ThinkPrune (arXiv 2504.01296) enforces the limit by truncating generation at L tokens: a
cut-off answer cannot be extracted and scores 0. `length_limited_reward` reproduces that
outcome for a run whose engine budget is larger than the current limit, and lets the
over-limit reward be a penalty (e.g. -1 for +-1 rewards) instead of 0.

Departure: ThinkPrune runs each pruning stage as a separate training round started from
the previous round's checkpoint; here the stages are steps of one run, so a single config
reproduces the 4000 -> 3000 -> 2000 schedule. Restart-per-round is still possible by giving
one stage per run.

What this module does not do: truncate generation (the engine's max_new_tokens does),
or count tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def length_limited_reward(
    rewards: Tensor, lengths: Tensor, limit: int, over_limit_reward: float = 0.0
) -> Tensor:
    """ThinkPrune hard limit: a trajectory longer than `limit` tokens gets `over_limit_reward`
    (0 in ThinkPrune), the rest keep their reward.

    rewards # [N]; lengths # [N] -> # [N]
    """
    if limit <= 0:
        raise ValueError(f"length limit must be a positive token count, got {limit}")
    if rewards.shape != lengths.shape:
        raise ValueError(
            f"rewards and lengths must both be [N]; got {tuple(rewards.shape)} and {tuple(lengths.shape)}"
        )
    over = torch.full_like(rewards, over_limit_reward)  # [N]
    return torch.where(lengths > limit, over, rewards)  # [N]


def thinkprune_limit(
    step: int, limits: Sequence[int] = (4000, 3000, 2000), starts: Sequence[int] = (0,)
) -> int:
    """Length limit in force at `step` under ThinkPrune's iterative pruning: stage k uses
    limits[k] from step starts[k] on. Limits must shrink, starts must rise from 0.

    Example: limits=(4000, 3000, 2000), starts=(0, 100, 200): steps 0-99 -> 4000,
    100-199 -> 3000, 200 onwards -> 2000.
    """
    check_schedule(limits, starts)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    stage = sum(1 for s in starts if s <= step) - 1
    return int(limits[stage])


def check_schedule(limits: Sequence[int], starts: Sequence[int]) -> None:
    """Validate a ThinkPrune schedule; the error names what to change."""
    if len(limits) == 0 or len(limits) != len(starts):
        raise ValueError(
            f"need one start step per limit; got limits={list(limits)} and starts={list(starts)}"
        )
    if starts[0] != 0:
        raise ValueError(f"the first stage must start at step 0; got starts={list(starts)}")
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        raise ValueError(f"stage start steps must strictly increase; got {list(starts)}")
    if any(lim <= 0 for lim in limits) or any(
        b >= a for a, b in zip(limits, limits[1:], strict=False)
    ):
        raise ValueError(
            f"limits must be positive and strictly shrinking (e.g. 4000, 3000, 2000); got {list(limits)}"
        )


def soft_length_penalty(
    lengths: Tensor, budget: int, coef: float = 1.0, cap: float | None = None
) -> Tensor:
    """Soft length penalty: -coef * max(0, L - budget) / budget, floored at -cap if given.

    A one-sided form of the length penalty of L1/LCPO (Aggarwal & Welleck, arXiv
    2503.04697), which charges |L - target|: only exceeding the budget costs, in units of
    the budget. Add the result to the reward. lengths # [N] -> # [N] float64
    """
    if budget <= 0:
        raise ValueError(f"length budget must be positive, got {budget}")
    excess = (lengths.to(torch.float64) - budget).clamp(min=0.0)  # [N]
    pen = -coef * excess / budget  # [N]
    return pen if cap is None else pen.clamp(min=-cap)  # [N]


def group_length_reward(lengths: Tensor, correct: Tensor, group_ids: Tensor) -> Tensor:
    """Kimi k1.5 length reward (arXiv 2501.12599, section 2.3.3), relative within each group:
    lam = 0.5 - (L - min_L) / (max_L - min_L); correct samples get lam, wrong ones min(0, lam).
    A group whose lengths are all equal gets 0 (the paper's formula divides by zero there).

    lengths # [N]; correct # [N] bool; group_ids # [N] -> # [N] float64
    """
    if not (lengths.shape == correct.shape == group_ids.shape) or lengths.dim() != 1:
        raise ValueError("lengths, correct and group_ids must all be [N]")
    out = torch.zeros(lengths.shape, dtype=torch.float64)  # [N]
    L = lengths.to(torch.float64)  # [N]
    for g in torch.unique(group_ids).tolist():
        idx = group_ids == g  # [N]
        lo, hi = L[idx].min(), L[idx].max()
        if hi == lo:
            continue
        lam = 0.5 - (L[idx] - lo) / (hi - lo)  # [n_g]
        out[idx] = torch.where(correct[idx].bool(), lam, lam.clamp(max=0.0))
    return out  # [N]
