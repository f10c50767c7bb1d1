"""Policy loss, aggregation, ratios, TIS, KL and entropy: hand-computed values, a slow
pure-Python reference on random inputs, finite-difference gradients, and the rule that a
masked token (tool output) gets exactly zero gradient."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from trajlab.algos.losses import (
    AGG_MODES,
    PolicyLossConfig,
    aggregate,
    entropy_from_logits,
    fold_kl_into_rewards,
    kl_penalty,
    policy_loss,
    sequence_log_ratio,
    tis_weights,
)

F64 = torch.float64
LN = math.log


def t(xs, dtype=F64):
    return torch.tensor(xs, dtype=dtype)


# --- aggregation -------------------------------------------------------------------------

# loss [[1, 2, 3], [4, x, x], [x, x, x]] with mask [[1,1,1], [1,0,0], [0,0,0]]
LOSS = [[1.0, 2.0, 3.0], [4.0, 99.0, math.nan], [7.0, math.inf, -5.0]]
MASK = [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


def test_aggregate_by_hand():
    loss, mask = t(LOSS), torch.tensor(MASK)
    # token-mean: (1 + 2 + 3 + 4) / 4 tokens = 2.5
    assert aggregate(loss, mask, "token-mean").item() == 2.5
    # seq-mean-token-mean: row means 2 and 4; the empty row is not a sequence: (2 + 4) / 2 = 3
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == 3.0
    # seq-mean-token-sum-norm, norm 4: (6 + 4) / (3 rows * 4) = 10 / 12
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", 4).item() == pytest.approx(
        10 / 12, abs=1e-16
    )


def test_aggregate_empty_mask_is_zero_not_nan():
    loss, mask = t(LOSS), torch.zeros(3, 3)
    for mode in AGG_MODES:
        assert aggregate(loss, mask, mode, norm_length=5).item() == 0.0


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_with_global_denominator_sum_to_full_batch(mode):
    loss, mask = t(LOSS), torch.tensor(MASK)
    full = aggregate(loss, mask, mode, norm_length=4)
    denominators = {"token-mean": 4, "seq-mean-token-mean": 2, "seq-mean-token-sum-norm": 3}
    d = denominators[mode]
    parts = aggregate(loss[:1], mask[:1], mode, 4, d) + aggregate(loss[1:], mask[1:], mode, 4, d)
    assert parts.item() == pytest.approx(full.item(), abs=1e-15)


def test_aggregate_errors():
    with pytest.raises(ValueError, match="norm_length"):
        aggregate(t(LOSS), torch.tensor(MASK), "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="choose one of"):
        aggregate(t(LOSS), torch.tensor(MASK), "sum")


# --- PPO clip by hand --------------------------------------------------------------------

# Row 0: A = +1 on both tokens, ratios 1.5 and 1.1; row 1: A = -1, ratios 0.5 and 4.0.
# Column 2 is a masked tool-output token holding garbage.
#   t1: A=+1, r=1.5 -> max(-1.5, -1.28) = -1.28 (clip-high active, no gradient)
#   t2: A=+1, r=1.1 -> max(-1.1, -1.1)  = -1.1  (d/dlogp = -A r = -1.1)
#   t3: A=-1, r=0.5 -> max(0.5, 0.8)    =  0.8  (clip-low active, no gradient)
#   t4: A=-1, r=4.0 -> max(4.0, 1.28)   =  4.0; dual-clip c=3: min(4.0, 3.0) = 3.0 (no gradient)
# token-mean with dual-clip: (-1.28 - 1.1 + 0.8 + 3.0) / 4 = 0.355
# token-mean without:        (-1.28 - 1.1 + 0.8 + 4.0) / 4 = 0.605
OLD = [[0.0, 0.0, math.nan], [0.0, 0.0, -math.inf]]
NEW = [[LN(1.5), LN(1.1), 123.0], [LN(0.5), LN(4.0), math.nan]]
ADV = [[1.0, 1.0, 50.0], [-1.0, -1.0, 50.0]]
PMASK = [[1, 1, 0], [1, 1, 0]]


def hand_inputs():
    logprobs = t(NEW).requires_grad_(True)
    return logprobs, t(OLD), t(ADV), torch.tensor(PMASK)


def test_ppo_clip_with_dual_clip_by_hand():
    logprobs, old, adv, mask = hand_inputs()
    out = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(dual_clip=3.0))
    assert out.loss.item() == pytest.approx(0.355, abs=1e-15)
    out.loss.backward()
    # only t2 is unclipped: d/dlogp (-A r) / 4 = -1.1 / 4 = -0.275; the rest 0, masked 0
    want = [[0.0, -0.275, 0.0], [0.0, 0.0, 0.0]]
    torch.testing.assert_close(logprobs.grad, t(want), rtol=0, atol=1e-15)
    s = out.stats
    assert s["clip_frac_high"] == 0.25 and s["clip_frac_low"] == 0.25 and s["clip_frac"] == 0.5
    assert s["dual_clip_frac"] == 0.25
    assert s["ratio_max"] == pytest.approx(4.0) and s["ratio_min"] == pytest.approx(0.5)
    # approx KL k1 = mean(old - new) = -(ln 1.5 + ln 1.1 + ln 0.5 + ln 4) / 4
    assert s["approx_kl_k1"] == pytest.approx(
        -(LN(1.5) + LN(1.1) + LN(0.5) + LN(4.0)) / 4, abs=1e-15
    )
    # k3 = mean(r - 1 - ln r)
    k3 = sum(r - 1 - LN(r) for r in (1.5, 1.1, 0.5, 4.0)) / 4
    assert s["approx_kl_k3"] == pytest.approx(k3, abs=1e-15)
    assert s["trained_tokens"] == 4.0


def test_ppo_clip_without_dual_clip_by_hand():
    logprobs, old, adv, mask = hand_inputs()
    out = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(dual_clip=None))
    assert out.loss.item() == pytest.approx(0.605, abs=1e-15)
    out.loss.backward()
    # t4 is now unclipped: d/dlogp (-A r) / 4 = 4.0 / 4 = 1.0
    torch.testing.assert_close(
        logprobs.grad, t([[0.0, -0.275, 0.0], [0.0, 1.0, 0.0]]), rtol=0, atol=1e-15
    )
    assert out.stats["dual_clip_frac"] == 0.0


def test_symmetric_clip_by_hand():
    # clip_high = 0.2: t1 -> -1.2, so (-1.2 - 1.1 + 0.8 + 3.0) / 4 = 0.375
    logprobs, old, adv, mask = hand_inputs()
    out = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(clip_high=0.2))
    assert out.loss.item() == pytest.approx(0.375, abs=1e-15)


def test_per_sequence_advantages_are_broadcast():
    logprobs, old, _, mask = hand_inputs()
    out = policy_loss(logprobs, old, t([1.0, -1.0]), mask)
    assert out.loss.item() == pytest.approx(0.355, abs=1e-15)


def test_tis_by_hand():
    # sampling logprobs: old - sampling = ln 3 on t1 (weight min(3, 2) = 2), ln 0.5 on t2 (0.5),
    # 0 on row 1 (weight 1). Loss: (2 * -1.28 + 0.5 * -1.1 + 0.8 + 3.0) / 4 = 0.6725 / 4
    logprobs, old, adv, mask = hand_inputs()
    samp = t([[-LN(3.0), -LN(0.5), math.nan], [0.0, 0.0, 0.0]])
    w = tis_weights(old, samp, mask, cap=2.0)
    torch.testing.assert_close(w, t([[2.0, 0.5, 0.0], [1.0, 1.0, 0.0]]), rtol=0, atol=1e-15)
    out = policy_loss(
        logprobs, old, adv, mask, PolicyLossConfig(tis_cap=2.0), sampling_logprobs=samp
    )
    assert out.loss.item() == pytest.approx((2 * -1.28 + 0.5 * -1.1 + 0.8 + 3.0) / 4, abs=1e-15)
    assert out.stats["tis_capped_frac"] == 0.25
    assert out.stats["tis_weight_mean"] == pytest.approx((2 + 0.5 + 1 + 1) / 4)
    out.loss.backward()
    # t2 gradient scaled by its weight 0.5: -0.275 * 0.5
    assert logprobs.grad[0, 1].item() == pytest.approx(-0.1375, abs=1e-15)


# --- GSPO sequence ratio by hand ---------------------------------------------------------


def test_gspo_sequence_ratio_by_hand():
    # row 0: token log-ratios ln 2, ln 0.5 -> geometric mean 1; A = +1 -> loss -1 on each token
    # row 1: ln 4, ln 1 -> geometric mean 2 -> clipped to 1.28 for A = +1 -> -1.28, no gradient
    # seq-mean-token-mean: (-1 + -1.28) / 2 = -1.14
    logprobs = t([[LN(2.0), LN(0.5), 7.0], [LN(4.0), 0.0, math.nan]]).requires_grad_(True)
    old = torch.zeros(2, 3, dtype=F64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    lr = sequence_log_ratio(logprobs, old, mask)
    torch.testing.assert_close(
        lr, t([[0.0, 0.0, 0.0], [LN(2.0), LN(2.0), 0.0]]), rtol=0, atol=1e-15
    )
    cfg = PolicyLossConfig(ratio_level="sequence", agg="seq-mean-token-mean")
    out = policy_loss(logprobs, old, t([1.0, 1.0]), mask, cfg)
    assert out.loss.item() == pytest.approx(-1.14, abs=1e-15)
    out.loss.backward()
    # d/dlogp_t of -A s_0 / 2 seqs = -(1 * s_0 / |y_0|) / 2 = -(1 / 2) / 2 = -0.25
    torch.testing.assert_close(
        logprobs.grad, t([[-0.25, -0.25, 0.0], [0.0, 0.0, 0.0]]), rtol=0, atol=1e-15
    )


# --- KL, entropy -------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    # pi = 0.5, pi_ref = 0.25: d = ln(pi_ref / pi) = ln 0.5
    # k1 = -d = ln 2; k2 = d^2 / 2; k3 = e^d - 1 - d = 0.5 - 1 + ln 2
    lp, ref, mask = t([[LN(0.5), 5.0]]), t([[LN(0.25), math.nan]]), torch.tensor([[1, 0]])
    d = LN(0.5)
    assert kl_penalty(lp, ref, mask, "k1")[0].tolist() == pytest.approx([-d, 0.0], abs=1e-15)
    assert kl_penalty(lp, ref, mask, "k2")[0].tolist() == pytest.approx([d * d / 2, 0.0], abs=1e-15)
    assert kl_penalty(lp, ref, mask, "k3")[0].tolist() == pytest.approx(
        [0.5 - 1 - d, 0.0], abs=1e-15
    )
    assert kl_penalty(lp, ref, mask, "none").abs().sum().item() == 0.0
    with pytest.raises(ValueError, match="choose one of"):
        kl_penalty(lp, ref, mask, "k4")


def test_k3_is_unbiased_for_kl():
    # Sample from a categorical pi, compare the mean of k1 and k3 with the exact KL(pi || ref).
    g = torch.Generator().manual_seed(0)
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    ref = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    exact = float((pi * (pi / ref).log()).sum())
    x = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    lp, rlp, m = pi.log()[x][None], ref.log()[x][None], torch.ones(1, x.numel())
    for est in ("k1", "k3"):
        assert kl_penalty(lp, rlp, m, est).mean().item() == pytest.approx(exact, abs=5e-3)


def test_kl_in_loss_and_in_reward():
    logprobs, old, adv, mask = hand_inputs()
    ref = t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    cfg = PolicyLossConfig(kl_estimator="k3", kl_coef=0.1)
    out = policy_loss(logprobs, old, adv, mask, cfg, ref_logprobs=ref)
    # ref = 0, log pi = ln r: d = ln(pi_ref / pi) = -ln r, k3 = e^d - 1 - d = 1/r - 1 + ln r
    # loss = 0.355 + 0.1 * token-mean(k3)
    k3 = sum(1 / r - 1 + LN(r) for r in (1.5, 1.1, 0.5, 4.0)) / 4
    assert out.loss.item() == pytest.approx(0.355 + 0.1 * k3, abs=1e-15)
    assert out.stats["kl_loss"] == pytest.approx(k3, abs=1e-15)
    # in the reward: r_i - beta * sum_t k1 = 1 - 0.1 * (ln 1.5 + ln 1.1), 0 - 0.1 * (ln 0.5 + ln 4)
    kl = kl_penalty(logprobs, ref, mask, "k1")
    folded = fold_kl_into_rewards(t([1.0, 0.0]), kl, mask, 0.1)
    assert folded.tolist() == pytest.approx(
        [1 - 0.1 * (LN(1.5) + LN(1.1)), -0.1 * (LN(0.5) + LN(4.0))], abs=1e-15
    )
    assert not folded.requires_grad
    # KL configured for the reward is not added to the loss
    cfg_r = PolicyLossConfig(kl_estimator="k1", kl_coef=0.1, kl_in="reward")
    assert policy_loss(logprobs, old, adv, mask, cfg_r).loss.item() == pytest.approx(
        0.355, abs=1e-15
    )


def test_entropy_by_hand():
    # uniform over 2 -> ln 2; one-hot (other logit -inf) -> 0; uniform over 4 -> ln 4
    logits = t(
        [
            [
                [0.0, 0.0, -math.inf, -math.inf],
                [0.0, -math.inf, -math.inf, -math.inf],
                [1.0, 1.0, 1.0, 1.0],
            ]
        ]
    )
    assert entropy_from_logits(logits)[0].tolist() == pytest.approx([LN(2), 0.0, LN(4)], abs=1e-15)


def test_entropy_bonus_in_loss():
    # entropy 0.4 on every trained token, coef 0.01: loss = 0.355 - 0.01 * 0.4
    logprobs, old, adv, mask = hand_inputs()
    ent = torch.full((2, 3), 0.4, dtype=F64)
    out = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(entropy_coef=0.01), entropy=ent)
    assert out.loss.item() == pytest.approx(0.355 - 0.004, abs=1e-15)
    assert out.stats["entropy"] == pytest.approx(0.4)


# --- slow loop reference on random inputs ------------------------------------------------


def ref_policy_loss(lp, old, adv, mask, cfg, samp, ref, ent):
    """One token at a time, with math, from the formulas in the docstrings."""
    B, T = len(lp), len(lp[0])

    def clamp(x, lo, hi):
        return max(lo, min(hi, x))

    losses = [[0.0] * T for _ in range(B)]
    kls = [[0.0] * T for _ in range(B)]
    for i in range(B):
        toks = [j for j in range(T) if mask[i][j]]
        seq = clamp(sum(lp[i][j] - old[i][j] for j in toks) / max(len(toks), 1), -20, 20)
        for j in toks:
            lr = seq if cfg.ratio_level == "sequence" else clamp(lp[i][j] - old[i][j], -20, 20)
            r = math.exp(lr)
            a = adv[i][j]
            loss = max(-a * r, -a * clamp(r, 1 - cfg.clip_low, 1 + cfg.clip_high))
            if cfg.dual_clip is not None and a < 0:
                loss = min(loss, -a * cfg.dual_clip)
            if cfg.tis_cap is not None:
                loss *= min(math.exp(clamp(old[i][j] - samp[i][j], -20, 20)), cfg.tis_cap)
            losses[i][j] = loss
            d = clamp(ref[i][j] - lp[i][j], -20, 20)
            kls[i][j] = {"k1": -d, "k2": d * d / 2, "k3": math.exp(d) - 1 - d, "none": 0.0}[
                cfg.kl_estimator
            ]

    def agg(m):
        if cfg.agg == "token-mean":
            n = sum(sum(r) for r in mask)
            return sum(m[i][j] for i in range(B) for j in range(T) if mask[i][j]) / max(n, 1)
        if cfg.agg == "seq-mean-token-mean":
            per = [
                sum(m[i][j] for j in range(T) if mask[i][j]) / sum(mask[i])
                for i in range(B)
                if sum(mask[i])
            ]
            return sum(per) / max(len(per), 1)
        return sum(m[i][j] for i in range(B) for j in range(T) if mask[i][j]) / (
            B * cfg.norm_length
        )

    total = agg(losses)
    if cfg.kl_in == "loss":
        total += cfg.kl_coef * agg(kls)
    total -= cfg.entropy_coef * agg(ent)
    return total


CONFIGS = [
    PolicyLossConfig(
        ratio_level=level,
        agg=agg,
        norm_length=7 if agg == "seq-mean-token-sum-norm" else None,
        dual_clip=dual,
        tis_cap=tis,
        kl_estimator=kl,
        kl_coef=0.05 if kl != "none" else 0.0,
        entropy_coef=ent,
    )
    for level, agg, dual, tis, (kl, ent) in itertools.product(
        ("token", "sequence"),
        AGG_MODES,
        (None, 3.0),
        (None, 2.0),
        (("none", 0.0), ("k1", 0.0), ("k2", 0.01), ("k3", 0.01)),
    )
]


def random_inputs(rng: random.Random, B: int = 4, T: int = 6):
    mask = [[int(rng.random() > 0.3) for _ in range(T)] for _ in range(B)]
    mask[-1] = [0] * T  # one fully masked row (a void-turn trajectory)
    old = [[-abs(rng.gauss(1.0, 0.7)) for _ in range(T)] for _ in range(B)]
    lp = [
        [o + rng.gauss(0, 0.4) for o in row] for row in old
    ]  # ratios spread across the clip range
    samp = [[o + rng.gauss(0, 0.5) for o in row] for row in old]
    ref = [[o + rng.gauss(0, 0.3) for o in row] for row in old]
    adv = [[rng.choice((-1.5, -0.3, 0.7, 2.0))] * T for _ in range(B)]
    ent = [[abs(rng.gauss(1.0, 0.5)) for _ in range(T)] for _ in range(B)]
    for i in range(B):  # garbage where the mask is 0
        for j in range(T):
            if not mask[i][j]:
                lp[i][j], old[i][j], samp[i][j], ref[i][j] = math.nan, -math.inf, math.inf, math.nan
                ent[i][j] = math.nan
    return lp, old, adv, mask, samp, ref, ent


@pytest.mark.parametrize(
    "cfg",
    CONFIGS,
    ids=lambda c: f"{c.ratio_level}-{c.agg}-{c.dual_clip}-{c.tis_cap}-{c.kl_estimator}",
)
def test_policy_loss_matches_loop_reference(cfg):
    rng = random.Random(7)
    for _ in range(5):
        lp, old, adv, mask, samp, ref, ent = random_inputs(rng)
        out = policy_loss(
            t(lp),
            t(old),
            t(adv),
            torch.tensor(mask),
            cfg,
            sampling_logprobs=t(samp),
            ref_logprobs=t(ref),
            entropy=t(ent),
        )
        want = ref_policy_loss(lp, old, adv, mask, cfg, samp, ref, ent)
        assert out.loss.item() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_clip_stats_match_loop_reference():
    rng = random.Random(3)
    cfg = PolicyLossConfig()
    for _ in range(20):
        lp, old, adv, mask, *_ = random_inputs(rng)
        s = policy_loss(t(lp), t(old), t(adv), torch.tensor(mask), cfg).stats
        toks = [(i, j) for i in range(len(mask)) for j in range(len(mask[0])) if mask[i][j]]
        rs = {(i, j): math.exp(lp[i][j] - old[i][j]) for i, j in toks}
        hi = sum(1 for k in toks if rs[k] > 1.28 and adv[k[0]][k[1]] > 0) / len(toks)
        lo = sum(1 for k in toks if rs[k] < 0.8 and adv[k[0]][k[1]] < 0) / len(toks)
        dual = sum(1 for k in toks if rs[k] > 3.0 and adv[k[0]][k[1]] < 0) / len(toks)
        k1 = sum(old[i][j] - lp[i][j] for i, j in toks) / len(toks)
        assert s["clip_frac_high"] == pytest.approx(hi) and s["clip_frac_low"] == pytest.approx(lo)
        assert s["dual_clip_frac"] == pytest.approx(dual)
        assert s["approx_kl_k1"] == pytest.approx(k1, rel=1e-12, abs=1e-12)


def test_entropy_matches_loop_reference():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 11, generator=g, dtype=F64) * 3
    got = entropy_from_logits(logits)
    for b, tt in itertools.product(range(3), range(4)):
        z = logits[b, tt].tolist()
        m = max(z)
        ps = [math.exp(x - m) for x in z]
        s = sum(ps)
        want = -sum(p / s * math.log(p / s) for p in ps)
        assert got[b, tt].item() == pytest.approx(want, rel=1e-12)


# --- gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_gradient_matches_finite_differences(level):
    rng = random.Random(11)
    lp, old, adv, mask, samp, ref, ent = random_inputs(rng)
    # finite differences need finite values everywhere; the mask keeps them out of the loss
    clean = [[x if math.isfinite(x) else -1.0 for x in row] for row in lp]
    cfg = PolicyLossConfig(
        ratio_level=level, kl_estimator="k3", kl_coef=0.1, agg="seq-mean-token-mean"
    )
    fixed = {"old": t(old), "adv": t(adv), "mask": torch.tensor(mask), "ref": t(ref)}

    def f(x):
        return policy_loss(
            x, fixed["old"], fixed["adv"], fixed["mask"], cfg, ref_logprobs=fixed["ref"]
        ).loss

    assert torch.autograd.gradcheck(f, (t(clean).requires_grad_(True),), eps=1e-7, atol=1e-7)


@pytest.mark.parametrize(
    "cfg", CONFIGS[::5], ids=lambda c: f"{c.ratio_level}-{c.agg}-{c.kl_estimator}"
)
def test_masked_tokens_get_exactly_zero_gradient(cfg):
    rng = random.Random(5)
    lp, old, adv, mask, samp, ref, ent = random_inputs(rng)
    logprobs = t(lp).requires_grad_(True)  # NaN at masked positions
    entropy = t(ent).requires_grad_(True)
    out = policy_loss(
        logprobs,
        t(old),
        t(adv),
        torch.tensor(mask),
        cfg,
        sampling_logprobs=t(samp),
        ref_logprobs=t(ref),
        entropy=entropy,
    )
    out.loss.backward()
    m = torch.tensor(mask).bool()
    assert torch.isfinite(out.loss)
    assert (logprobs.grad[~m] == 0).all()
    if cfg.entropy_coef:
        assert (entropy.grad[~m] == 0).all() and entropy.grad[m].abs().sum() > 0
    else:
        assert entropy.grad is None  # logged, not trained
    assert torch.isfinite(logprobs.grad).all()
    assert logprobs.grad[m].abs().sum() > 0  # the trained tokens do learn


def test_tool_output_tokens_get_zero_gradient_through_a_model():
    """A tiny causal LM; the positions predicting tool-output tokens must receive exactly
    zero gradient at their logits, whatever those tokens are."""
    torch.manual_seed(0)
    V, D = 13, 8
    emb, head = torch.nn.Embedding(V, D).double(), torch.nn.Linear(D, V).double()
    ids = torch.randint(0, V, (2, 9))
    # prompt (3) | model (2) | tool output (2) | model (2); row 1's last tokens are padding
    mask = torch.tensor([[0, 0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0, 0]])
    logits = head(emb(ids[:, :-1]))  # [B, T-1, V] predicts ids[:, 1:]
    logits.retain_grad()
    logprobs = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
    m = mask[:, 1:]
    cfg = PolicyLossConfig(kl_estimator="k3", kl_coef=0.1, entropy_coef=0.01)
    out = policy_loss(
        logprobs,
        logprobs.detach() - 0.1,
        torch.tensor([1.0, -1.0], dtype=F64),
        m,
        cfg,
        ref_logprobs=logprobs.detach() + 0.2,
        entropy=entropy_from_logits(logits),
    )
    out.loss.backward()
    assert (logits.grad[~m.bool()] == 0).all()
    assert (logits.grad[m.bool()].abs().sum(-1) > 0).all()


# --- config validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"clip_low": 1.5}, "clip_low"),
        ({"clip_high": 0.0}, "clip_high"),
        ({"dual_clip": 0.5}, "dual_clip"),
        ({"ratio_level": "seq"}, "ratio_level"),
        ({"agg": "mean"}, "agg"),
        ({"agg": "seq-mean-token-sum-norm"}, "norm_length"),
        ({"tis_cap": 0.0}, "tis_cap"),
        ({"kl_estimator": "low_var_kl"}, "kl_estimator"),
        ({"kl_in": "both"}, "kl_in"),
        ({"kl_coef": -1.0}, "kl_coef"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PolicyLossConfig(**kwargs)


def test_missing_inputs_are_named():
    logprobs, old, adv, mask = hand_inputs()
    with pytest.raises(ValueError, match="sampling_logprobs"):
        policy_loss(logprobs, old, adv, mask, PolicyLossConfig(tis_cap=2.0))
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logprobs, old, adv, mask, PolicyLossConfig(kl_estimator="k3", kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logprobs, old, adv, mask, PolicyLossConfig(entropy_coef=0.1))
    assert not PolicyLossConfig().uses_reference
    assert PolicyLossConfig(kl_estimator="k1", kl_coef=0.1, kl_in="reward").uses_reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs(dtype):
    # the trainer's logprobs are float32 (or bf16 under autocast): same hand value, looser tolerance
    logprobs = t(NEW).to(dtype).requires_grad_(True)
    out = policy_loss(logprobs, t(OLD).to(dtype), t(ADV).to(dtype), torch.tensor(PMASK))
    assert out.loss.dtype == dtype
    assert out.loss.item() == pytest.approx(0.355, abs=2e-2 if dtype == torch.bfloat16 else 1e-6)
    out.loss.backward()
    assert (logprobs.grad[:, 2] == 0).all() and torch.isfinite(logprobs.grad).all()


# -- sampler vs trainer mismatch ---------------------------------------------------------


def test_logprob_mismatch_hand_values():
    from trajlab.algos.losses import logprob_mismatch

    trainer = torch.tensor([[math.log(0.5), math.log(0.9), math.log(0.2), 0.0]])  # [1, 4]
    sampler = torch.tensor([[math.log(0.5), math.log(0.6), math.log(0.4), -3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is a tool token
    m = logprob_mismatch(trainer, sampler, mask)
    # log r = 0, log 1.5, log 0.5 ; r = 1, 1.5, 0.5
    lr = [0.0, math.log(1.5), math.log(0.5)]
    r = [1.0, 1.5, 0.5]
    assert m["tokens"] == 3
    assert m["abs_logprob"] == pytest.approx(sum(abs(x) for x in lr) / 3)
    assert m["kl_k3"] == pytest.approx(sum((ri - 1) - li for ri, li in zip(r, lr)) / 3)
    assert m["ratio_outside"] == pytest.approx(2 / 3)  # 1.5 > 1.25 and 0.5 < 0.8
    same = logprob_mismatch(sampler, sampler, mask)
    assert same["kl_k3"] == 0.0 and same["abs_logprob"] == 0.0 and same["ratio_outside"] == 0.0
    empty = logprob_mismatch(trainer, sampler, torch.zeros(1, 4))
    assert empty == {"abs_logprob": 0.0, "kl_k3": 0.0, "ratio_outside": 0.0, "tokens": 0.0}
