"""Advantage estimators for outcome-reward RL: one scalar reward per trajectory in, one
advantage per trajectory out.

API. Every estimator in `ADVANTAGES` has the same signature:

    estimator(rewards, group_ids, token_counts=None, *, eps=1e-6) -> advantages
        rewards       # [N] float, one scalar outcome reward per trajectory
        group_ids     # [N] int64, trajectories with the same id are samples of the same prompt
        token_counts  # [N] number of trained tokens per trajectory (loss_mask.sum(-1));
                      #     only REINFORCE++ uses it, for its token-weighted batch whitening
        advantages    # [N] same dtype as rewards

Groups are named by integer ids rather than a [G, n] layout so that groups of unequal
size (after overlong or void filtering, or a partially failed rollout) need no padding.
The ids need not be contiguous or sorted; `group_ids_from_keys` turns the string
`Trajectory.group_id`s into such ids. `broadcast_to_tokens` turns [N] advantages into
the [N, T] per-token advantages the policy loss reads, zero wherever the loss mask is 0.

Estimators (see docs/algorithms.md for the table):
  grpo        (r - mean_g) / (std_g + eps), std unbiased (Bessel), as verl and TRL compute
              it with torch.std; DeepSeekMath (arXiv 2402.03300) does not say which.
  dr_grpo     r - mean_g; no std. Dr. GRPO (arXiv 2503.20783) also replaces the per-sequence
              length normaliser by a constant: that part lives in the loss aggregation
              `seq-mean-token-sum-norm` (losses.py), not here.
  rloo        r_i - mean of the other samples in the group (Ahmadian et al., arXiv 2402.14740;
              Kool et al. 2019).
  reinforce_pp_baseline
              r - mean_g, then whitened over every trained token of the batch (CIR's
              `reinforce_plus_plus_baseline` with verl's masked_whiten; REINFORCE++,
              arXiv 2501.03262). Needs token_counts.
  gspo        identical to grpo. GSPO (arXiv 2507.18071) differs from GRPO only in the
              importance ratio (sequence-level geometric mean, losses.py `ratio_level`).

Edge cases, chosen so that nothing can produce NaN:
  * A group of one sample gets advantage 0: its group mean is itself and it has no
    leave-one-out baseline. Departure from verl, which gives such a sample its raw reward
    (it sets mean 0, std 1 for singleton groups).
  * A group whose rewards are all equal gets advantage exactly 0 (not r - mean rounded
    to 1e-17), so zero-variance groups contribute exactly nothing to the gradient.
  * Whitening a batch whose trained tokens have no spread (one token, or all equal) only
    subtracts their mean, so they become exactly 0; with no trained tokens at all the
    values are returned unchanged. verl raises or divides by sqrt(1e-8) there.

What this module does not do: token-level rewards, GAE or a critic, KL folding (see
losses.fold_kl_into_rewards) or filtering (filters.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

AdvantageFn = Callable[..., Tensor]

WHITEN_EPS = 1e-8  # under the square root, as verl's masked_whiten


def group_ids_from_keys(keys: Sequence[Hashable]) -> Tensor:
    """Map arbitrary group keys (e.g. Trajectory.group_id strings) to int ids by first appearance."""
    index: dict[Hashable, int] = {}
    return torch.tensor([index.setdefault(k, len(index)) for k in keys], dtype=torch.long)  # [N]


def _check(rewards: Tensor, group_ids: Tensor) -> None:
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be 1-D of the same length [N]; got "
            f"{tuple(rewards.shape)} and {tuple(group_ids.shape)}. Sum token-level rewards "
            f"over the sequence first, and map group keys with group_ids_from_keys."
        )
    if not rewards.is_floating_point():
        raise TypeError(f"rewards must be a float tensor, got {rewards.dtype}")
    if not bool(torch.isfinite(rewards).all()):
        bad = torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()
        raise ValueError(
            f"rewards must be finite; trajectories {bad} are not (fix the reward function)"
        )


def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-trajectory view of its group: (count, mean, unbiased std, is_constant), each [N]."""
    _, inverse = torch.unique(group_ids, return_inverse=True)  # inverse: [N] in 0..G-1
    g = int(inverse.max()) + 1 if inverse.numel() else 0
    zeros = rewards.new_zeros(g)  # [G]
    count = zeros.index_add(0, inverse, torch.ones_like(rewards))  # [G]
    mean = zeros.index_add(0, inverse, rewards) / count  # [G]
    centred = rewards - mean[inverse]  # [N]
    sq = zeros.index_add(0, inverse, centred * centred)  # [G]
    std = torch.sqrt(sq / (count - 1).clamp(min=1))  # [G]; Bessel-corrected
    rep = zeros.scatter(0, inverse, rewards)  # [G] some member of each group (any will do)
    differs = zeros.index_add(0, inverse, (rewards != rep[inverse]).to(rewards.dtype))  # [G]
    constant = differs == 0  # [G] all rewards equal; also True for singleton groups
    return count[inverse], mean[inverse], std[inverse], constant[inverse]  # each [N]


def grpo(
    rewards: Tensor, group_ids: Tensor, token_counts: Tensor | None = None, *, eps: float = 1e-6
) -> Tensor:
    """GRPO (DeepSeekMath, arXiv 2402.03300): (r - group mean) / (group std + eps), unbiased std."""
    _check(rewards, group_ids)
    _, mean, std, constant = _group_stats(rewards, group_ids)  # each [N]
    adv = (rewards - mean) / (std + eps)  # [N]
    return torch.where(constant, torch.zeros_like(adv), adv)  # [N]


def dr_grpo(
    rewards: Tensor, group_ids: Tensor, token_counts: Tensor | None = None, *, eps: float = 1e-6
) -> Tensor:
    """Dr. GRPO (arXiv 2503.20783): r - group mean, no std division.

    Pair it with the loss aggregation `seq-mean-token-sum-norm` (a constant normaliser such
    as the maximum response length) to get the whole of Dr. GRPO.
    """
    _check(rewards, group_ids)
    _, mean, _, constant = _group_stats(rewards, group_ids)  # each [N]
    adv = rewards - mean  # [N]
    return torch.where(constant, torch.zeros_like(adv), adv)  # [N]


def rloo(
    rewards: Tensor, group_ids: Tensor, token_counts: Tensor | None = None, *, eps: float = 1e-6
) -> Tensor:
    """RLOO (Ahmadian et al., arXiv 2402.14740): r_i - mean_{j != i} r_j = n/(n-1) (r_i - mean)."""
    _check(rewards, group_ids)
    count, mean, _, constant = _group_stats(rewards, group_ids)  # each [N]
    adv = (rewards - mean) * count / (count - 1).clamp(min=1)  # [N]
    return torch.where(constant, torch.zeros_like(adv), adv)  # [N]


def masked_whiten_counts(values: Tensor, counts: Tensor, eps: float = WHITEN_EPS) -> Tensor:
    """Whiten per-trajectory values as if each were repeated over its `counts` tokens.

    values  # [N] one value per trajectory, constant over its tokens
    counts  # [N] trained tokens per trajectory
    Equals verl's masked_whiten(values[:, None] * mask, mask) on the trained tokens:
    (x - mean) / sqrt(var + eps) with token-weighted mean and Bessel-corrected variance
    over all S = sum(counts) tokens.
    """
    w = counts.to(values.dtype)  # [N]
    s = w.sum()
    if s == 0:
        return values.clone()  # [N]; no trained tokens, no statistics
    valid = w > 0  # [N]
    first = values[valid][0]
    if bool((values[valid] == first).all()):
        return values - first  # [N]; no spread (one token, or all equal): only centre
    mean = (w * values).sum() / s
    var = (w * (values - mean) ** 2).sum() / s * (s / (s - 1))
    return (values - mean) * torch.rsqrt(var + eps)  # [N]


def reinforce_pp_baseline(
    rewards: Tensor, group_ids: Tensor, token_counts: Tensor | None = None, *, eps: float = 1e-6
) -> Tensor:
    """REINFORCE++ with a group-mean baseline, whitened over the batch's trained tokens.

    CIR (arXiv 2505.24480, verl `reinforce_plus_plus_baseline`); REINFORCE++ (arXiv 2501.03262).
    token_counts # [N] trained tokens per trajectory (loss_mask.sum(-1)); trajectories with 0
    tokens still get an advantage but do not move the batch statistics.
    """
    if token_counts is None:
        raise ValueError(
            "reinforce_pp_baseline whitens over the batch's trained tokens and needs "
            "token_counts=loss_mask.sum(-1) (shape [N])."
        )
    if token_counts.shape != rewards.shape:
        raise ValueError(
            f"token_counts must be [N]={tuple(rewards.shape)}, got {tuple(token_counts.shape)}"
        )
    centred = dr_grpo(rewards, group_ids)  # [N]
    return masked_whiten_counts(centred, token_counts)  # [N]


def broadcast_to_tokens(advantages: Tensor, loss_mask: Tensor) -> Tensor:
    """Per-trajectory advantages [N] -> per-token advantages [N, T], exactly 0 where loss_mask is 0."""
    if advantages.dim() != 1 or loss_mask.dim() != 2 or loss_mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"expected advantages [N] and loss_mask [N, T]; got {tuple(advantages.shape)} "
            f"and {tuple(loss_mask.shape)}"
        )
    mask = loss_mask.bool()  # [N, T]
    return torch.where(mask, advantages[:, None], torch.zeros((), dtype=advantages.dtype))  # [N, T]


ADVANTAGES: dict[str, AdvantageFn] = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "reinforce_pp_baseline": reinforce_pp_baseline,
    "gspo": grpo,  # GSPO's advantage is GRPO's; its change is the sequence-level ratio
}


def get_advantage_fn(name: str) -> AdvantageFn:
    """Look an estimator up by name, naming the valid choices on a typo."""
    try:
        return ADVANTAGES[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; choose one of {sorted(ADVANTAGES)}"
        ) from None


def compute_advantages(
    name: str,
    rewards: Tensor,
    group_ids: Tensor,
    loss_mask: Tensor,
    *,
    eps: float = 1e-6,
) -> Tensor:
    """The one call the trainer makes: estimator by name, then broadcast to tokens.

    rewards   # [N]
    group_ids # [N]
    loss_mask # [N, T]
    returns   # [N, T]
    """
    counts = loss_mask.sum(-1)  # [N]
    adv = get_advantage_fn(name)(rewards, group_ids, counts, eps=eps)  # [N]
    return broadcast_to_tokens(adv, loss_mask)  # [N, T]
