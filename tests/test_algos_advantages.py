"""Advantage estimators: hand-computed values, a slow pure-Python reference on random
batches, and the edge cases (singleton groups, all-equal rewards, empty masks)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from trajlab.algos.advantages import (
    ADVANTAGES,
    broadcast_to_tokens,
    compute_advantages,
    get_advantage_fn,
    group_ids_from_keys,
    masked_whiten_counts,
)

F64 = torch.float64


def t(xs, dtype=F64):
    return torch.tensor(xs, dtype=dtype)


# A batch used by the hand-computed tests:
#   group 7: rewards 1, 0, 1, 0  -> mean 0.5, centred +-0.5,
#            unbiased std = sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.5773502691896258
#   group 3: rewards 1, 1        -> all equal: every estimator gives 0
#   group 9: reward 2            -> a singleton: every estimator gives 0
REWARDS = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 2.0]
GROUPS = [7, 7, 7, 7, 3, 3, 9]
COUNTS = [3, 3, 3, 3, 2, 2, 1]


def test_grpo_by_hand():
    # 0.5 / (sqrt(1/3) + 1e-6) = 0.8660239...; exactly 0.5 * sqrt(3) without eps
    adv = ADVANTAGES["grpo"](t(REWARDS), torch.tensor(GROUPS))
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert adv.tolist() == pytest.approx([a, -a, a, -a, 0, 0, 0], abs=1e-15)
    adv0 = ADVANTAGES["grpo"](t(REWARDS), torch.tensor(GROUPS), eps=0.0)
    assert adv0[0].item() == pytest.approx(0.5 * math.sqrt(3), abs=1e-15)


def test_dr_grpo_by_hand():
    # r - mean: +-0.5 in group 7; no std division
    adv = ADVANTAGES["dr_grpo"](t(REWARDS), torch.tensor(GROUPS))
    assert adv.tolist() == [0.5, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0]


def test_rloo_by_hand():
    # r_0 = 1, others in group 7 are 0, 1, 0 -> baseline 1/3 -> 2/3; r_1 = 0 -> baseline 2/3 -> -2/3
    adv = ADVANTAGES["rloo"](t(REWARDS), torch.tensor(GROUPS))
    assert adv.tolist() == pytest.approx([2 / 3, -2 / 3, 2 / 3, -2 / 3, 0, 0, 0], abs=1e-15)


def test_reinforce_pp_baseline_by_hand():
    # centred values per token: 0.5 x3, -0.5 x3, 0.5 x3, -0.5 x3, 0 x2, 0 x2, 0 x1 (S = 17 tokens)
    # token mean = 0; unbiased var = (12 * 0.25 / 17) * 17/16 = 3/16
    # whitened: 0.5 / sqrt(3/16 + 1e-8) = 1.1547005...
    adv = ADVANTAGES["reinforce_pp_baseline"](
        t(REWARDS), torch.tensor(GROUPS), torch.tensor(COUNTS)
    )
    a = 0.5 / math.sqrt(3 / 16 + 1e-8)
    assert adv.tolist() == pytest.approx([a, -a, a, -a, 0, 0, 0], abs=1e-14)


def test_gspo_advantage_is_grpo():
    r, g = t(REWARDS), torch.tensor(GROUPS)
    assert torch.equal(ADVANTAGES["gspo"](r, g), ADVANTAGES["grpo"](r, g))


# --- slow loop reference ---------------------------------------------------------------


def ref_advantages(name, rewards, groups, counts, eps=1e-6):
    """Straight from the papers' definitions, one trajectory at a time."""
    out = []
    for i, r in enumerate(rewards):
        members = [rewards[j] for j in range(len(rewards)) if groups[j] == groups[i]]
        n = len(members)
        if all(m == members[0] for m in members):
            out.append(0.0)
            continue
        mean = sum(members) / n
        if name in ("grpo", "gspo"):
            std = math.sqrt(sum((m - mean) ** 2 for m in members) / (n - 1))
            out.append((r - mean) / (std + eps))
        elif name in ("dr_grpo", "reinforce_pp_baseline"):
            out.append(r - mean)
        elif name == "rloo":
            others = [rewards[j] for j in range(len(rewards)) if groups[j] == groups[i] and j != i]
            out.append(r - sum(others) / len(others))
    if name == "reinforce_pp_baseline":
        tokens = [out[i] for i in range(len(out)) for _ in range(counts[i])]
        s = len(tokens)
        if s >= 2 and any(x != tokens[0] for x in tokens):
            mu = sum(tokens) / s
            var = sum((x - mu) ** 2 for x in tokens) / (s - 1)
            out = [(x - mu) / math.sqrt(var + 1e-8) for x in out]
        elif s >= 1:  # no spread: centre only, so trained tokens become exactly 0
            out = [x - tokens[0] for x in out]
    return out


def random_batch(rng: random.Random, binary: bool):
    groups, rewards, counts = [], [], []
    for _ in range(rng.randint(1, 6)):
        gid = rng.randint(0, 10_000)
        if gid in groups:
            continue
        for _ in range(rng.randint(1, 6)):
            groups.append(gid)
            rewards.append(float(rng.randint(0, 1)) if binary else rng.gauss(0, 2))
            counts.append(rng.randint(0, 5))
    order = list(range(len(groups)))
    rng.shuffle(order)  # groups interleaved, ids not contiguous
    return [rewards[i] for i in order], [groups[i] for i in order], [counts[i] for i in order]


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
@pytest.mark.parametrize("binary", [True, False])
def test_matches_loop_reference(name, binary):
    rng = random.Random(hash((name, binary)) % 1000)
    for _ in range(40):
        rewards, groups, counts = random_batch(rng, binary)
        got = ADVANTAGES[name](t(rewards), torch.tensor(groups), torch.tensor(counts))
        want = ref_advantages(name, rewards, groups, counts)
        assert got.dtype == F64
        assert got.tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_reinforce_pp_matches_token_level_masked_whiten():
    # The per-trajectory shortcut equals whitening the [N, T] token matrix over the mask.
    g = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (12,), generator=g).to(F64)
    groups = torch.arange(12) // 4
    mask = (torch.rand(12, 9, generator=g) > 0.3).to(F64)
    adv_tok = compute_advantages("reinforce_pp_baseline", rewards, groups, mask)  # [N, T]
    centred = ADVANTAGES["dr_grpo"](rewards, groups)[:, None] * mask
    m = mask.bool()
    mu = centred[m].mean()
    var = centred[m].var()  # unbiased, as verl masked_var
    want = (centred - mu) * torch.rsqrt(var + 1e-8) * mask
    torch.testing.assert_close(adv_tok, want, rtol=1e-12, atol=1e-12)


# --- edge cases --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_edge_cases_never_nan(name):
    fn = ADVANTAGES[name]
    one = fn(t([3.0]), torch.tensor([0]), torch.tensor([4]))
    assert one.tolist() == [0.0]
    equal = fn(t([0.1, 0.1, 0.1]), torch.tensor([5, 5, 5]), torch.tensor([2, 2, 2]))
    assert equal.tolist() == [0.0, 0.0, 0.0]  # exactly 0, not 1e-17
    empty = fn(t([]), torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    assert empty.shape == (0,)
    no_tokens = fn(t([1.0, 0.0]), torch.tensor([1, 1]), torch.tensor([0, 0]))
    assert torch.isfinite(no_tokens).all()


def test_whiten_degenerate_batches():
    # no trained tokens: unchanged; one token or all trained values equal: centred only
    assert masked_whiten_counts(t([0.5, -0.5]), torch.tensor([0, 0])).tolist() == [0.5, -0.5]
    assert masked_whiten_counts(t([0.5, -0.5]), torch.tensor([1, 0])).tolist() == [0.0, -1.0]
    assert masked_whiten_counts(t([0.5, 0.5, 9.0]), torch.tensor([2, 3, 0])).tolist() == [
        0.0,
        0.0,
        8.5,
    ]


def test_float32_inputs_stay_float32():
    adv = ADVANTAGES["grpo"](torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    assert adv.dtype == torch.float32


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="token_counts"):
        ADVANTAGES["reinforce_pp_baseline"](t([1.0, 0.0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="choose one of"):
        get_advantage_fn("ppo_gae")
    with pytest.raises(ValueError, match="1-D"):
        ADVANTAGES["grpo"](t([[1.0, 0.0]]), torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match="finite"):
        ADVANTAGES["grpo"](t([1.0, math.nan]), torch.tensor([0, 0]))


def test_group_ids_from_keys():
    ids = group_ids_from_keys(["q7", "q7", "q2", "q7", "q9", "q2"])
    assert ids.tolist() == [0, 0, 1, 0, 2, 1]


def test_broadcast_to_tokens():
    adv = t([2.0, -1.0])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert broadcast_to_tokens(adv, mask).tolist() == [[0.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]
    empty = broadcast_to_tokens(adv, torch.zeros(2, 3))
    assert empty.abs().sum().item() == 0.0


def test_compute_advantages_end_to_end():
    # group [1, 0] -> grpo: +-0.5 / (sqrt(0.5) + 1e-6); row 1 has mask only on its last token
    mask = torch.tensor([[1, 1, 0], [0, 0, 1]])
    out = compute_advantages("grpo", t([1.0, 0.0]), torch.tensor([0, 0]), mask)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    torch.testing.assert_close(out, t([[a, a, 0.0], [0.0, 0.0, -a]]), rtol=0, atol=1e-15)
