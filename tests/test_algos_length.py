"""Length budgets: ThinkPrune's hard limit and schedule, the soft penalty and the Kimi k1.5
group length reward, by hand and against loop references."""

from __future__ import annotations

import random

import pytest
import torch

from trajlab.algos.length import (
    group_length_reward,
    length_limited_reward,
    soft_length_penalty,
    thinkprune_limit,
)

F64 = torch.float64


def test_hard_limit_by_hand():
    # limit 100: lengths 50 and 100 keep their reward, 101 and 300 get 0 (ThinkPrune) or -1
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64)
    lengths = torch.tensor([50, 100, 101, 300])
    assert length_limited_reward(rewards, lengths, 100).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert length_limited_reward(rewards, lengths, 100, over_limit_reward=-1.0).tolist() == [
        1.0,
        1.0,
        -1.0,
        -1.0,
    ]
    with pytest.raises(ValueError, match="positive"):
        length_limited_reward(rewards, lengths, 0)


def test_thinkprune_schedule_by_hand():
    limits, starts = (4000, 3000, 2000), (0, 100, 200)
    got = [thinkprune_limit(s, limits, starts) for s in (0, 99, 100, 199, 200, 10_000)]
    assert got == [4000, 4000, 3000, 3000, 2000, 2000]
    assert thinkprune_limit(5, (4000,), (0,)) == 4000


@pytest.mark.parametrize(
    "limits, starts, msg",
    [
        ((4000, 3000), (0,), "one start step per limit"),
        ((4000, 3000), (10, 20), "start at step 0"),
        ((4000, 3000), (0, 0), "strictly increase"),
        ((3000, 4000), (0, 10), "shrinking"),
        ((4000, 0), (0, 10), "positive"),
    ],
)
def test_schedule_errors_name_the_fix(limits, starts, msg):
    with pytest.raises(ValueError, match=msg):
        thinkprune_limit(0, limits, starts)


def test_schedule_matches_loop_reference():
    limits, starts = (4000, 3500, 2500, 1000), (0, 7, 8, 30)
    for step in range(50):
        want = limits[0]
        for lim, s in zip(limits, starts, strict=True):
            if step >= s:
                want = lim
        assert thinkprune_limit(step, limits, starts) == want


def test_soft_penalty_by_hand():
    # budget 100, coef 0.5: 150 -> -0.5 * 50 / 100 = -0.25; 400 -> -1.5, capped at -1 with cap=1
    lengths = torch.tensor([20, 100, 150, 400])
    assert soft_length_penalty(lengths, 100, coef=0.5).tolist() == [0.0, 0.0, -0.25, -1.5]
    assert soft_length_penalty(lengths, 100, coef=0.5, cap=1.0).tolist() == [0.0, 0.0, -0.25, -1.0]


def test_group_length_reward_by_hand():
    # group 0 lengths 10, 20, 30: lam = 0.5, 0, -0.5; correct, wrong, correct -> 0.5, min(0, 0)=0, -0.5
    # group 1 lengths 10, 30: lam = 0.5, -0.5; both wrong -> min(0, 0.5) = 0, -0.5
    # group 2 lengths all 7: 0
    lengths = torch.tensor([10, 20, 30, 10, 30, 7, 7])
    correct = torch.tensor([True, False, True, False, False, True, False])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    assert group_length_reward(lengths, correct, groups).tolist() == [
        0.5,
        0.0,
        -0.5,
        0.0,
        -0.5,
        0.0,
        0.0,
    ]


def test_length_rewards_match_loop_reference():
    rng = random.Random(2)
    for _ in range(100):
        n = rng.randint(1, 12)
        lengths = [rng.randint(0, 500) for _ in range(n)]
        correct = [rng.random() < 0.5 for _ in range(n)]
        groups = [rng.randint(0, 3) for _ in range(n)]
        rewards = [float(c) for c in correct]
        limit, budget, coef = rng.randint(1, 500), rng.randint(1, 500), rng.uniform(0, 2)

        got = length_limited_reward(
            torch.tensor(rewards, dtype=F64), torch.tensor(lengths), limit
        ).tolist()
        assert got == [0.0 if n > limit else r for r, n in zip(rewards, lengths, strict=True)]

        got = soft_length_penalty(torch.tensor(lengths), budget, coef).tolist()
        assert got == pytest.approx(
            [-coef * max(0, L - budget) / budget for L in lengths], rel=1e-12, abs=1e-15
        )

        want = []
        for i in range(n):
            member = [lengths[j] for j in range(n) if groups[j] == groups[i]]
            lo, hi = min(member), max(member)
            lam = 0.0 if hi == lo else 0.5 - (lengths[i] - lo) / (hi - lo)
            want.append(lam if correct[i] else min(0.0, lam))
        got = group_length_reward(
            torch.tensor(lengths), torch.tensor(correct), torch.tensor(groups)
        ).tolist()
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
