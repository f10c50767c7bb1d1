"""Filters: hand-worked batches, a slow loop reference on random batches, the never-raise
rule for short budgets, and SimpleTIR's order (advantages first, then the loss mask)."""

from __future__ import annotations

import random

import pytest
import torch

from trajlab.algos.advantages import compute_advantages
from trajlab.algos.filters import (
    FilterResult,
    combine,
    dynamic_sampling_filter,
    group_pass_rates,
    overlong_filter,
    overlong_penalty,
    pass_rate_filter,
    void_turn_filter,
)

F64 = torch.float64


def t(xs, dtype=F64):
    return torch.tensor(xs, dtype=dtype)


# Batch used by hand: group 5 = [1, 0, 1] (mixed), group 2 = [1, 1] (all correct),
# group 8 = [0, 0, 0] (all wrong), group 4 = [0, 1, 0, 0] (mixed), group 6 = [1] (singleton)
REWARDS = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
GROUPS = [5, 5, 5, 2, 2, 8, 8, 8, 4, 4, 4, 4, 6]


def test_void_turn_filter_keeps_group_statistics():
    # Group [1, 0, 1, 0]; trajectory 2 has a void turn. GRPO on the full group gives
    # +-0.5 / (sqrt(1/3) + 1e-6) to everyone; only trajectory 2's loss mask is zeroed.
    rewards, groups = t([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 0, 0])
    mask = torch.ones(4, 3)
    adv = compute_advantages("grpo", rewards, groups, mask)  # first: all samples counted
    res = void_turn_filter([False, False, True, False])
    new_mask = res.apply(mask)  # then: zero loss for the void trajectory
    assert new_mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1]]
    assert adv[0, 0].item() == pytest.approx(0.5 / (3**-0.5 + 1e-6), abs=1e-15)
    assert res.keep.tolist() == [True, True, False, True]
    assert res.fractions() == {"filtered/void_turn": 0.25}


def test_dynamic_sampling_by_hand():
    # zero-variance: groups 2, 8 (constant) and 6 (singleton); valid in arrival order: 5, 4
    res = dynamic_sampling_filter(t(REWARDS), torch.tensor(GROUPS), target_groups=1)
    assert res.kept_groups == [5] and res.shortfall == 0
    assert res.reasons["zero_variance"].tolist() == [g in (2, 8, 6) for g in GROUPS]
    assert res.reasons["over_target"].tolist() == [g == 4 for g in GROUPS]
    assert res.keep.tolist() == [g == 5 for g in GROUPS]
    # 6 of 13 trajectories are in zero-variance groups, 4 are surplus
    assert res.fractions() == {"filtered/zero_variance": 6 / 13, "filtered/over_target": 4 / 13}


def test_dynamic_sampling_short_budget_never_raises():
    res = dynamic_sampling_filter(t(REWARDS), torch.tensor(GROUPS), target_groups=5)
    assert res.kept_groups == [5, 4] and res.shortfall == 3
    everything_flat = dynamic_sampling_filter(
        t([1.0, 1.0, 0.0]), torch.tensor([0, 0, 1]), target_groups=4
    )
    assert everything_flat.kept_groups == [] and everything_flat.shortfall == 4
    assert not everything_flat.keep.any()
    empty = dynamic_sampling_filter(t([]), torch.tensor([], dtype=torch.long), target_groups=2)
    assert (
        empty.kept_groups == []
        and empty.shortfall == 2
        and empty.fractions()
        == {
            "filtered/zero_variance": 0.0,
            "filtered/over_target": 0.0,
        }
    )


def test_dynamic_sampling_min_std():
    # group 0: [1.0, 1.0005] population std 0.00025 < 1e-3 -> dropped; group 1: [0, 1] std 0.5 kept
    res = dynamic_sampling_filter(
        t([1.0, 1.0005, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]), min_std=1e-3
    )
    assert res.kept_groups == [1]
    assert dynamic_sampling_filter(t([1.0, 1.0005]), torch.tensor([0, 0])).kept_groups == [0]


def test_pass_rate_filter_by_hand():
    # pass rates: group 5: 2/3, group 2: 1, group 8: 0, group 4: 1/4, group 6: 1
    res = pass_rate_filter(t(REWARDS), torch.tensor(GROUPS), low=0.3, high=0.8)
    assert res.group_stats["pass_rate"] == pytest.approx([2 / 3, 1.0, 0.0, 0.25, 1.0])
    assert res.kept_groups == [5]
    assert res.reasons["too_easy"].tolist() == [g in (2, 6) for g in GROUPS]
    assert res.reasons["too_hard"].tolist() == [g in (8, 4) for g in GROUPS]
    # the default band [0.2, 0.8] keeps 1/4 as well
    assert pass_rate_filter(t(REWARDS), torch.tensor(GROUPS)).kept_groups == [5, 4]


def test_pass_rate_band_is_inclusive_but_never_keeps_0_or_1():
    res = pass_rate_filter(
        t([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]), torch.tensor([0, 0, 1, 1, 2, 2]), low=0.0, high=1.0
    )
    assert res.kept_groups == [0]  # p = 0.5; p = 1 and p = 0 are dropped even inside [0, 1]
    edge = pass_rate_filter(
        t([1.0, 0.0, 0.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 0, 0]), low=0.2, high=0.2
    )
    assert edge.kept_groups == [0]  # p = 0.2 exactly lies in [0.2, 0.2]


def test_pass_rate_filter_with_target_and_bools():
    res = pass_rate_filter(
        torch.tensor([True, False, False, True]), torch.tensor([3, 3, 1, 1]), target_groups=1
    )
    assert res.kept_groups == [3] and res.shortfall == 0
    assert res.reasons["over_target"].tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="low <= high"):
        pass_rate_filter(t([1.0]), torch.tensor([0]), low=0.9, high=0.1)
    with pytest.raises(ValueError, match="rewards > 0"):
        pass_rate_filter(t([1.0, -1.0]), torch.tensor([0, 0]))


def test_overlong_filter_by_hand():
    # group 0: 5 samples, 2 truncated -> 3 left < min 4 -> the other 3 dropped as "overlong_group"
    # group 1: 4 samples, none truncated -> kept
    truncated = [True, False, True, False, False, False, False, False, False]
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    res = overlong_filter(truncated, groups, min_group_size=4)
    assert res.reasons["overlong"].tolist() == truncated
    assert res.reasons["overlong_group"].tolist() == [
        False,
        True,
        False,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert res.keep.tolist() == [False] * 5 + [True] * 4
    plain = overlong_filter(truncated)
    assert plain.keep.tolist() == [not x for x in truncated]
    with pytest.raises(ValueError, match="group_ids"):
        overlong_filter(truncated, min_group_size=4)


def test_overlong_penalty_by_hand():
    # L_max = 100, buffer 20, factor 1: 0 up to 80; L = 90 -> -(10 / 20) = -0.5; L = 100 -> -1;
    # beyond L_max the DAPO paper's -1 (floor)
    lengths = torch.tensor([10, 80, 81, 90, 100, 130])
    assert overlong_penalty(lengths, 100, 20).tolist() == [0.0, 0.0, -0.05, -0.5, -1.0, -1.0]
    assert overlong_penalty(lengths, 100, 20, factor=0.5).tolist()[3] == -0.25
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lengths, 100, 0)


def test_combine_counts_each_reason():
    a = void_turn_filter([True, False, False])
    b = overlong_filter([True, True, False])
    c = combine(a, b)
    assert c.keep.tolist() == [False, False, True]
    assert c.fractions() == {"filtered/void_turn": 1 / 3, "filtered/overlong": 2 / 3}
    with pytest.raises(ValueError, match="different batch sizes"):
        combine(a, void_turn_filter([True]))


def test_apply_checks_shape():
    with pytest.raises(ValueError, match="loss_mask"):
        void_turn_filter([True, False]).apply(torch.ones(3, 4))


def test_group_pass_rates_order():
    ids, rates = group_pass_rates(torch.tensor([1, 0, 1, 1]), torch.tensor([9, 9, 2, 2]))
    assert ids == [9, 2] and rates.tolist() == [0.5, 1.0]


# --- slow loop reference -------------------------------------------------------------------


def ref_group_filter(rewards, groups, target, keep_group):
    order = list(dict.fromkeys(groups))
    valid = [
        g for g in order if keep_group([rewards[i] for i in range(len(groups)) if groups[i] == g])
    ]
    kept = valid if target is None else valid[:target]
    shortfall = 0 if target is None else max(target - len(valid), 0)
    return kept, [groups[i] in kept for i in range(len(groups))], shortfall


def random_groups(rng):
    groups, rewards = [], []
    for g in rng.sample(range(100), rng.randint(0, 7)):
        p = rng.random()
        for _ in range(rng.randint(1, 6)):
            groups.append(g)
            rewards.append(float(rng.random() < p))
    order = list(range(len(groups)))
    rng.shuffle(order)
    return [rewards[i] for i in order], [groups[i] for i in order]


def test_group_filters_match_loop_reference():
    rng = random.Random(0)
    for _ in range(200):
        rewards, groups = random_groups(rng)
        target = rng.choice([None, 0, 1, 3, 10])
        gids = torch.tensor(groups, dtype=torch.long)

        res = dynamic_sampling_filter(t(rewards), gids, target)
        kept, keep, short = ref_group_filter(rewards, groups, target, lambda r: len(set(r)) > 1)
        assert (res.kept_groups, res.keep.tolist(), res.shortfall) == (kept, keep, short)

        lo, hi = sorted((rng.random(), rng.random()))
        res = pass_rate_filter(t(rewards), gids, lo, hi, target)
        kept, keep, short = ref_group_filter(
            rewards,
            groups,
            target,
            lambda r, lo=lo, hi=hi: 0 < sum(r) / len(r) < 1 and lo <= sum(r) / len(r) <= hi,
        )
        assert (res.kept_groups, res.keep.tolist(), res.shortfall) == (kept, keep, short)
        assert isinstance(res, FilterResult)


def test_overlong_penalty_matches_loop_reference():
    rng = random.Random(1)
    for _ in range(50):
        lmax = rng.randint(10, 500)
        buf = rng.randint(1, lmax)
        factor = rng.uniform(0.1, 2.0)
        lengths = [rng.randint(0, lmax + 50) for _ in range(20)]
        got = overlong_penalty(torch.tensor(lengths), lmax, buf, factor).tolist()
        want = [max(min(-(L - (lmax - buf)) / buf * factor, 0.0), -factor) for L in lengths]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
