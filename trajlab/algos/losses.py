"""Policy-gradient losses: PPO clip with clip-higher and dual-clip, token- or sequence-level
importance ratios, three loss aggregations, truncated importance sampling, KL estimators
and an entropy bonus. Every function is pure and takes a loss mask.

How it is used. The trainer calls `policy_loss(logprobs, old_logprobs, advantages, loss_mask,
cfg, ...)` once per micro-batch and gets a scalar loss plus a dict of float statistics
(clip fractions, approximate KL to the old policy, ratio range, TIS weights, KL and entropy
terms) for metrics.jsonl. The pieces are public so tests and other recipes can reuse them.

Shapes: B trajectories, T tokens (the padded sequence length), V vocabulary.
    logprobs, old_logprobs, ref_logprobs, sampling_logprobs, entropy   # [B, T]
    advantages                                                          # [B, T] or [B]
    loss_mask                                                           # [B, T] 1 = trained

The loss mask is the one rule: a token with loss_mask 0 (prompt, tool output, padding,
a filtered trajectory) contributes exactly 0 to the loss and receives exactly 0 gradient,
even when its inputs are garbage (-inf, NaN), because every input is first replaced by 0
there with torch.where. Tool output is masked because it is the interpreter's text, not
an action of the policy (DESIGN invariant 2).

Departures and choices:
  * Log-ratios are clamped to [-20, 20] before exp (as verl does) so that a stale old
    logprob cannot overflow; beyond the clamp the gradient is 0.
  * `seq-mean-token-mean` averages over sequences that have at least one trained token;
    `seq-mean-token-sum-norm` divides by all B rows (a constant, which is Dr. GRPO's point).
    verl's `seq-mean-token-sum-norm` divides the batch sum by T only; ours also divides by B.
  * TIS weights are per token, also under GSPO's sequence-level ratio.
  * k1 is allowed in the loss but its gradient has zero expectation on-policy
    (E_pi[grad log pi] = 0); it belongs in the reward. k3 ("low_var_kl") is the usual
    in-loss choice (GRPO).

What this module does not do: compute logprobs from a model (models.token_logprobs), step an
optimizer, or hold any state between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from trajlab.algos.advantages import broadcast_to_tokens

LOG_RATIO_CLAMP = 20.0
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
RATIO_LEVELS = ("token", "sequence")
KL_ESTIMATORS = ("none", "k1", "k2", "k3")
KL_PLACES = ("loss", "reward")


# --- masking and aggregation -------------------------------------------------------------


def _mask(loss_mask: Tensor) -> Tensor:
    if loss_mask.dim() != 2:
        raise ValueError(f"loss_mask must be [B, T], got shape {tuple(loss_mask.shape)}")
    return loss_mask.bool()  # [B, T]


def _zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """x where mask else 0; the gradient to masked positions is exactly 0 even if x is NaN."""
    if x.shape != mask.shape:
        raise ValueError(
            f"expected a [B, T] tensor shaped like loss_mask {tuple(mask.shape)}, got {tuple(x.shape)}"
        )
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))  # [B, T]


def masked_mean(x: Tensor, loss_mask: Tensor) -> Tensor:
    """Mean of x over trained tokens; 0 when there are none."""
    mask = _mask(loss_mask)  # [B, T]
    return _zero_masked(x, mask).sum() / mask.sum().clamp(min=1)


def aggregate(
    loss_mat: Tensor,
    loss_mask: Tensor,
    mode: str = "token-mean",
    norm_length: float | None = None,
    denominator: float | None = None,
) -> Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

    token-mean               sum_{i,t} m l / sum_{i,t} m                   (DAPO, arXiv 2503.14476)
    seq-mean-token-mean      mean over non-empty i of (sum_t m l / sum_t m) (GRPO, arXiv 2402.03300)
    seq-mean-token-sum-norm  sum_{i,t} m l / (B * norm_length)             (Dr. GRPO, arXiv 2503.20783)

    denominator overrides the divisor (tokens, non-empty sequences, or rows B) so that
    micro-batches of one batch can each be divided by the whole batch's count and summed.
    """
    mask = _mask(loss_mask)  # [B, T]
    lm = _zero_masked(loss_mat, mask)  # [B, T]
    if mode == "token-mean":
        d = mask.sum().clamp(min=1) if denominator is None else denominator
        return lm.sum() / d
    if mode == "seq-mean-token-mean":
        n = mask.sum(-1)  # [B]
        per_seq = lm.sum(-1) / n.clamp(min=1)  # [B]; empty rows are 0
        d = (n > 0).sum().clamp(min=1) if denominator is None else denominator
        return per_seq.sum() / d
    if mode == "seq-mean-token-sum-norm":
        if norm_length is None or norm_length <= 0:
            raise ValueError(
                "seq-mean-token-sum-norm needs a positive constant norm_length "
                "(Dr. GRPO uses the maximum response length)"
            )
        rows = max(mask.shape[0], 1) if denominator is None else denominator
        return lm.sum() / (rows * norm_length)
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {AGG_MODES}")


# --- importance ratios -------------------------------------------------------------------


def token_log_ratio(logprobs: Tensor, old_logprobs: Tensor, loss_mask: Tensor) -> Tensor:
    """log pi(y_t) - log pi_old(y_t) per token, clamped; 0 on masked tokens.  # [B, T]"""
    mask = _mask(loss_mask)  # [B, T]
    diff = _zero_masked(logprobs, mask) - _zero_masked(old_logprobs, mask)  # [B, T]
    return diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]


def sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, loss_mask: Tensor) -> Tensor:
    """GSPO (arXiv 2507.18071): log of the geometric mean of token ratios over the
    sequence's trained tokens, (1/|y_i|) sum_t m (log pi - log pi_old), repeated on every
    token of the row (0 on masked tokens).  # [B, T]

    Its gradient w.r.t. a trained token's logprob is 1/|y_i|, so with `seq-mean-token-mean`
    aggregation the loss is exactly GSPO's per-sequence objective.
    """
    mask = _mask(loss_mask)  # [B, T]
    diff = _zero_masked(logprobs, mask) - _zero_masked(old_logprobs, mask)  # [B, T]
    n = mask.sum(-1, keepdim=True).clamp(min=1)  # [B, 1]
    seq = (diff.sum(-1, keepdim=True) / n).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, 1]
    return _zero_masked(seq.expand_as(diff), mask)  # [B, T]


def logprob_mismatch(
    trainer_logprobs: Tensor,
    sampling_logprobs: Tensor,
    loss_mask: Tensor,
    band: tuple[float, float] = (0.8, 1.25),
) -> dict[str, float]:
    """How far the trainer's logprobs of the sampled tokens are from the sampler's.

    With log r = trainer - sampler per token (the tokens were drawn from the sampler):
      abs_logprob   mean |log r|
      kl_k3         mean (r - 1) - log r, the k3 estimate of KL(sampler || trainer) (Schulman
                    2020); 0 when the two agree, always >= 0
      ratio_outside fraction of tokens with r outside `band` (the PPO-style trust region)
      tokens        how many tokens were compared (the loss mask's count)
    A large mismatch means the update is off-policy for reasons that are not learning
    (precision of a decode copy, kernels, top-p truncation); see trajlab.viewer.alarms.
    """
    mask = _mask(loss_mask)  # [B, T]
    n = float(mask.sum())
    if n == 0:
        return {"abs_logprob": 0.0, "kl_k3": 0.0, "ratio_outside": 0.0, "tokens": 0.0}
    log_r = _zero_masked(trainer_logprobs.detach() - sampling_logprobs.detach(), mask)  # [B, T]
    r = torch.exp(log_r)  # [B, T]; exp(0) = 1 on masked tokens, which k3 maps to 0
    k3 = _zero_masked((r - 1) - log_r, mask)  # [B, T]
    outside = _zero_masked(((r < band[0]) | (r > band[1])).to(log_r.dtype), mask)  # [B, T]
    return {
        "abs_logprob": float(log_r.abs().sum()) / n,
        "kl_k3": float(k3.sum()) / n,
        "ratio_outside": float(outside.sum()) / n,
        "tokens": n,
    }


def tis_weights(
    old_logprobs: Tensor, sampling_logprobs: Tensor, loss_mask: Tensor, cap: float = 2.0
) -> Tensor:
    """Truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"): min(pi_old / pi_sampler, C) per token, detached.

    Corrects for the engine sampling from a slightly different distribution than the
    trainer's own forward pass (different kernels, precision, or a stale engine). 0 on
    masked tokens.  # [B, T]
    """
    if cap <= 0:
        raise ValueError(f"tis cap must be positive, got {cap}")
    log_w = token_log_ratio(old_logprobs.detach(), sampling_logprobs.detach(), loss_mask)  # [B, T]
    w = torch.exp(log_w).clamp(max=cap)  # [B, T]
    return _zero_masked(w, _mask(loss_mask))  # [B, T]


# --- PPO clipped surrogate ---------------------------------------------------------------


def ppo_clip_token_losses(
    log_ratio: Tensor,
    advantages: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = None,
) -> Tensor:
    """Per-token clipped surrogate loss (to minimise).  # [B, T]

    ratio = exp(log_ratio)
    l = max(-A ratio, -A clip(ratio, 1 - clip_low, 1 + clip_high))   PPO (arXiv 1707.06347);
        clip_high > clip_low is clip-higher (DAPO, arXiv 2503.14476)
    for A < 0 with dual_clip c: l = min(l, -A c)                    dual-clip (Ye et al.,
        arXiv 1912.09729): bounds the loss of a negative-advantage token whose ratio exploded
    """
    ratio = torch.exp(log_ratio)  # [B, T]
    unclipped = -advantages * ratio  # [B, T]
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [B, T]
    loss = torch.maximum(unclipped, clipped)  # [B, T]
    if dual_clip is not None:
        bounded = torch.minimum(loss, -advantages * dual_clip)  # [B, T]
        loss = torch.where(advantages < 0, bounded, loss)  # [B, T]
    return loss  # [B, T]


@dataclass
class PolicyLossConfig:
    """Options of the policy loss; each names the paper it comes from. Defaults follow CIR's
    run.sh (clip 0.2/0.28, dual-clip 3.0, token-mean, no KL, no entropy)."""

    # Ratio floor 1 - clip_low (PPO, arXiv 1707.06347).
    clip_low: float = 0.2
    # Ratio ceiling 1 + clip_high; above clip_low it is clip-higher (DAPO, arXiv 2503.14476).
    clip_high: float = 0.28
    # c > 1 bounding the loss -A*ratio of A < 0 tokens (Ye et al., arXiv 1912.09729); None = off.
    dual_clip: float | None = 3.0
    # "token" (PPO) or "sequence": geometric mean of token ratios (GSPO, arXiv 2507.18071).
    ratio_level: str = "token"
    # One of AGG_MODES; see aggregate(). Dr. GRPO uses seq-mean-token-sum-norm.
    agg: str = "token-mean"
    # Constant divisor of seq-mean-token-sum-norm (Dr. GRPO: the max response length).
    norm_length: float | None = None
    # Cap C of truncated importance sampling (Yao et al. 2025; verl default 2.0); None = off.
    tis_cap: float | None = None
    # none | k1 | k2 | k3 (Schulman 2020, "Approximating KL divergence").
    kl_estimator: str = "none"
    # beta multiplying the KL term, wherever it goes.
    kl_coef: float = 0.0
    # "loss": beta * agg(kl) is added to the loss; "reward": the trainer calls fold_kl_into_rewards.
    kl_in: str = "loss"
    # Coefficient of the entropy bonus subtracted from the loss (0 in CIR, ToRL, SimpleTIR).
    entropy_coef: float = 0.0

    @classmethod
    def from_algo(cls, algo: Any, max_new_tokens: int) -> PolicyLossConfig:
        """From trajlab.train.config.AlgoConfig (0 means off for dual_clip and tis_cap; Dr.
        GRPO's divisor defaults to the response budget)."""
        return cls(
            clip_low=algo.clip_low,
            clip_high=algo.clip_high,
            dual_clip=algo.dual_clip if algo.dual_clip > 0 else None,
            ratio_level=algo.ratio_level,
            agg=algo.loss_agg,
            norm_length=(algo.norm_length or float(max_new_tokens))
            if algo.loss_agg == "seq-mean-token-sum-norm"
            else None,
            tis_cap=algo.tis_cap if algo.tis_cap > 0 else None,
            kl_estimator=algo.kl,
            kl_coef=algo.kl_coef,
            kl_in=algo.kl_in,
            entropy_coef=algo.entropy_coef,
        )

    def __post_init__(self) -> None:
        def bad(name: str, value: object, valid: str) -> ValueError:
            return ValueError(f"PolicyLossConfig.{name}={value!r} is invalid; {valid}")

        if not 0.0 < self.clip_low < 1.0:
            raise bad("clip_low", self.clip_low, "expected 0 < clip_low < 1 (e.g. 0.2)")
        if not self.clip_high > 0.0:
            raise bad("clip_high", self.clip_high, "expected clip_high > 0 (e.g. 0.28)")
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            raise bad("dual_clip", self.dual_clip, "expected None or a value > 1 (e.g. 3.0)")
        if self.ratio_level not in RATIO_LEVELS:
            raise bad("ratio_level", self.ratio_level, f"choose one of {RATIO_LEVELS}")
        if self.agg not in AGG_MODES:
            raise bad("agg", self.agg, f"choose one of {AGG_MODES}")
        if self.agg == "seq-mean-token-sum-norm" and not (
            self.norm_length and self.norm_length > 0
        ):
            raise bad(
                "norm_length",
                self.norm_length,
                "seq-mean-token-sum-norm needs a positive constant, e.g. the max response length",
            )
        if self.tis_cap is not None and not self.tis_cap > 0:
            raise bad("tis_cap", self.tis_cap, "expected None or a positive cap (e.g. 2.0)")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise bad("kl_estimator", self.kl_estimator, f"choose one of {KL_ESTIMATORS}")
        if self.kl_in not in KL_PLACES:
            raise bad("kl_in", self.kl_in, f"choose one of {KL_PLACES}")
        if not (self.kl_coef >= 0 and math.isfinite(self.kl_coef)):
            raise bad("kl_coef", self.kl_coef, "expected a finite value >= 0")
        if not math.isfinite(self.entropy_coef):
            raise bad("entropy_coef", self.entropy_coef, "expected a finite value")

    @property
    def uses_reference(self) -> bool:
        """Whether a frozen reference model is needed at all (no reference when KL is off)."""
        return self.kl_estimator != "none" and self.kl_coef > 0


@dataclass
class PolicyLossOutput:
    loss: Tensor  # scalar, differentiable
    stats: dict[str, float] = field(default_factory=dict)  # for metrics.jsonl


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    loss_mask: Tensor,
    cfg: PolicyLossConfig | None = None,
    *,
    sampling_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    entropy: Tensor | None = None,
    denominator: float | None = None,
) -> PolicyLossOutput:
    """The full per-micro-batch loss: clipped policy gradient (x TIS) + beta KL - entropy bonus.

    logprobs          # [B, T] current policy, requires grad
    old_logprobs      # [B, T] policy that produced the data, as recomputed by the trainer
    advantages        # [B, T] or [B]
    loss_mask         # [B, T]
    sampling_logprobs # [B, T] engine logprobs, needed when cfg.tis_cap is set
    ref_logprobs      # [B, T] frozen reference, needed when KL is in the loss
    entropy           # [B, T] per-token entropy, needed when cfg.entropy_coef != 0
    denominator       # optional global count for aggregate() under gradient accumulation
    """
    cfg = cfg or PolicyLossConfig()
    mask = _mask(loss_mask)  # [B, T]
    if advantages.dim() == 1:
        advantages = broadcast_to_tokens(advantages, mask)  # [B, T]
    adv = _zero_masked(advantages.detach(), mask)  # [B, T]

    ratio_fn = sequence_log_ratio if cfg.ratio_level == "sequence" else token_log_ratio
    log_ratio = ratio_fn(logprobs, old_logprobs.detach(), mask)  # [B, T]
    pg = ppo_clip_token_losses(log_ratio, adv, cfg.clip_low, cfg.clip_high, cfg.dual_clip)  # [B, T]
    tis = None
    if cfg.tis_cap is not None:
        if sampling_logprobs is None:
            raise ValueError(
                "PolicyLossConfig.tis_cap is set but no sampling_logprobs were given; "
                "pass the engine's logprobs or set tis_cap=None"
            )
        tis = tis_weights(old_logprobs, sampling_logprobs, mask, cfg.tis_cap)  # [B, T]
        pg = pg * tis  # [B, T]
    pg_loss = aggregate(pg, mask, cfg.agg, cfg.norm_length, denominator)
    loss = pg_loss
    stats = _ratio_stats(log_ratio, adv, mask, logprobs, old_logprobs, cfg)
    stats["pg_loss"] = float(pg_loss.detach())
    if tis is not None:
        stats["tis_weight_mean"] = float(masked_mean(tis, mask))
        stats["tis_capped_frac"] = float(masked_mean((tis >= cfg.tis_cap).to(tis.dtype), mask))

    if cfg.kl_in == "loss" and cfg.uses_reference:
        if ref_logprobs is None:
            raise ValueError(
                f"KL {cfg.kl_estimator} is in the loss (kl_coef={cfg.kl_coef}) but no ref_logprobs were given"
            )
        kl = kl_penalty(logprobs, ref_logprobs.detach(), mask, cfg.kl_estimator)  # [B, T]
        kl_loss = aggregate(kl, mask, cfg.agg, cfg.norm_length, denominator)
        loss = loss + cfg.kl_coef * kl_loss
        stats["kl_loss"] = float(kl_loss.detach())
    if entropy is not None:
        ent = aggregate(entropy, mask, cfg.agg, cfg.norm_length, denominator)
        stats["entropy"] = float(ent.detach())
        if cfg.entropy_coef != 0:
            loss = loss - cfg.entropy_coef * ent
    elif cfg.entropy_coef != 0:
        raise ValueError(f"entropy_coef={cfg.entropy_coef} but no per-token entropy was given")
    stats["loss"] = float(loss.detach())
    return PolicyLossOutput(loss=loss, stats=stats)


@torch.no_grad()
def _ratio_stats(
    log_ratio: Tensor,
    adv: Tensor,
    mask: Tensor,
    logprobs: Tensor,
    old_logprobs: Tensor,
    cfg: PolicyLossConfig,
) -> dict[str, float]:
    """Clip fractions and approximate KL(old || new) over trained tokens."""
    ratio = torch.exp(log_ratio)  # [B, T]
    f = ratio.dtype
    high = (ratio > 1 + cfg.clip_high) & (adv > 0)  # [B, T] clip-high active
    low = (ratio < 1 - cfg.clip_low) & (adv < 0)  # [B, T] clip-low active
    dual = (
        (ratio > cfg.dual_clip) & (adv < 0) if cfg.dual_clip is not None else torch.zeros_like(mask)
    )  # [B, T]
    tok = token_log_ratio(logprobs.detach(), old_logprobs.detach(), mask)  # [B, T] new - old
    valid_ratio = ratio[mask]
    return {
        "clip_frac": float(masked_mean((high | low).to(f), mask)),
        "clip_frac_high": float(masked_mean(high.to(f), mask)),
        "clip_frac_low": float(masked_mean(low.to(f), mask)),
        "dual_clip_frac": float(masked_mean(dual.to(f), mask)),
        "approx_kl_k1": float(masked_mean(-tok, mask)),
        "approx_kl_k3": float(masked_mean(torch.exp(tok) - 1 - tok, mask)),
        "ratio_mean": float(masked_mean(ratio, mask)),
        "ratio_max": float(valid_ratio.max()) if valid_ratio.numel() else 0.0,
        "ratio_min": float(valid_ratio.min()) if valid_ratio.numel() else 0.0,
        "trained_tokens": float(mask.sum()),
    }


# --- KL to a reference, entropy ----------------------------------------------------------


def kl_penalty(
    logprobs: Tensor, ref_logprobs: Tensor, loss_mask: Tensor, estimator: str = "k3"
) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman 2020,
    http://joschu.net/blog/kl-approx.html). With d = log pi_ref - log pi (clamped):
        k1 = -d                 unbiased, high variance, can be negative
        k2 = d^2 / 2            biased, low variance
        k3 = exp(d) - 1 - d     unbiased, >= 0, low variance ("low_var_kl" in verl/GRPO)
    0 on masked tokens; "none" returns zeros.  # [B, T]
    """
    mask = _mask(loss_mask)  # [B, T]
    d = -token_log_ratio(logprobs, ref_logprobs, mask)  # [B, T] log pi_ref - log pi
    if estimator == "k1":
        kl = -d
    elif estimator == "k2":
        kl = 0.5 * d * d
    elif estimator == "k3":
        kl = torch.exp(d) - 1 - d
    elif estimator == "none":
        kl = torch.zeros_like(d)
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")
    return _zero_masked(kl, mask)  # [B, T]


def fold_kl_into_rewards(rewards: Tensor, kl: Tensor, loss_mask: Tensor, coef: float) -> Tensor:
    """KL in the reward (as verl's apply_kl_penalty summed over the sequence for outcome
    estimators): r_i - beta * sum_t m kl_{i,t}. Detached: it is a reward, not a loss.

    rewards # [N]; kl # [N, T] from kl_penalty(..., "k1") usually; returns # [N]
    """
    mask = _mask(loss_mask)  # [N, T]
    return rewards - coef * _zero_masked(kl.detach(), mask).sum(-1)  # [N]


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Per-token entropy of the softmax over the vocabulary: logsumexp(z) - sum softmax(z) z.

    Vocabulary entries with logit -inf (banned tokens) have p = 0 and contribute 0.
    logits # [B, T, V] -> # [B, T]
    """
    logz = torch.logsumexp(logits, dim=-1)  # [B, T]
    p = torch.softmax(logits, dim=-1)  # [B, T, V]
    z = torch.where(p > 0, logits, torch.zeros((), dtype=logits.dtype))  # [B, T, V]
    return logz - (p * z).sum(-1)  # [B, T]
