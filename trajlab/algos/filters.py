"""Batch filters that never abort training, each returning a reason-labelled FilterResult,
and DAPO's soft overlong penalty.

Two kinds of filter, applied at two different points of the RL step:

  Trajectory filters mask the loss of single trajectories and leave group statistics alone.
  Apply them AFTER advantages are computed:
      adv = compute_advantages(name, rewards, group_ids, loss_mask)   # all samples counted
      res = void_turn_filter(void_flags)                               # and/or overlong_filter
      loss_mask = res.apply(loss_mask)                                 # [N, T], zero rows
  This is SimpleTIR's rule (arXiv 2509.02479, `mask_void_turns`): a trajectory with a void
  turn gets zero loss but still counts in its group's mean and std. DAPO's overlong
  filtering (arXiv 2503.14476) masks truncated samples the same way.

  Group filters decide which prompt groups form the training batch. Apply them BEFORE
  advantages, by keeping only the trajectories with res.keep (whole groups go together,
  so the group statistics of kept groups are unchanged):
      dynamic_sampling_filter   zero-variance groups out, batch topped up to a target
                                (DAPO dynamic sampling); reports the shortfall, never raises
      pass_rate_filter          pass rate within [low, high] (Bae et al., arXiv 2504.03380)
      overlong_filter(min_group_size=...)  groups with too few untruncated samples out
                                (SimpleTIR `remove_clip`, min_n=4)

Every result carries `reasons`: reason -> [N] bool of the trajectories dropped for it, so the
trainer logs `filtered/<reason>` fractions. A trajectory dropped for two reasons is counted
under both; `keep` is the complement of their union.

What this module does not do: sample more rollouts (the trainer loops, calling the group
filter on everything gathered so far, until it is satisfied or its budget is spent), or
compute rewards and pass/fail flags (rewards/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class FilterResult:
    """What a filter decided, by reason."""

    reasons: dict[str, Tensor]  # reason -> [N] bool, True where the trajectory is dropped for it
    num_trajectories: int
    kept_groups: list[int] | None = None  # group filters: kept ids in first-appearance order
    shortfall: int = 0  # groups missing to reach the target batch (dynamic sampling)
    group_stats: dict[str, list[float]] = field(default_factory=dict)  # e.g. per-group pass rates

    @property
    def keep(self) -> Tensor:
        """[N] bool, True where the trajectory is trained on."""
        dropped = torch.zeros(self.num_trajectories, dtype=torch.bool)  # [N]
        for r in self.reasons.values():
            dropped = dropped | r
        return ~dropped  # [N]

    def fractions(self) -> dict[str, float]:
        """{'filtered/<reason>': fraction of trajectories dropped for that reason}."""
        n = max(self.num_trajectories, 1)
        return {f"filtered/{k}": float(v.sum()) / n for k, v in self.reasons.items()}

    def apply(self, loss_mask: Tensor) -> Tensor:
        """Zero the loss mask rows of dropped trajectories.  # [N, T] -> [N, T]"""
        if loss_mask.dim() != 2 or loss_mask.shape[0] != self.num_trajectories:
            raise ValueError(
                f"loss_mask must be [N={self.num_trajectories}, T], got {tuple(loss_mask.shape)}"
            )
        return loss_mask * self.keep[:, None].to(loss_mask.dtype)  # [N, T]


def combine(*results: FilterResult) -> FilterResult:
    """Union of several filters' decisions over the same N trajectories."""
    n = {r.num_trajectories for r in results}
    if len(n) != 1:
        raise ValueError(f"cannot combine filter results over different batch sizes {sorted(n)}")
    reasons: dict[str, Tensor] = {}
    for r in results:
        for k, v in r.reasons.items():
            reasons[k] = reasons[k] | v if k in reasons else v.clone()
    return FilterResult(
        reasons=reasons,
        num_trajectories=n.pop(),
        shortfall=sum(r.shortfall for r in results),
    )


# --- helpers ------------------------------------------------------------------------------


def _as_flags(x: Tensor | Sequence[bool], name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(t.shape)}")
    return t.bool()  # [N]


def _groups_in_order(group_ids: Tensor) -> list[int]:
    """Distinct group ids in order of first appearance."""
    seen: dict[int, None] = {}
    for g in group_ids.tolist():
        seen.setdefault(int(g), None)
    return list(seen)


def _group_mean(values: Tensor, group_ids: Tensor) -> tuple[list[int], Tensor]:
    """(group ids in first-appearance order, mean of values per group [G])."""
    order = _groups_in_order(group_ids)
    v = values.to(torch.float64)  # [N]
    means = (
        torch.stack([v[group_ids == g].mean() for g in order]) if order else v.new_zeros(0)
    )  # [G]
    return order, means


def _take_groups(
    group_ids: Tensor, order: list[int], dropped: dict[str, list[int]], target_groups: int | None
) -> FilterResult:
    """Keep groups not listed in `dropped`, at most the first `target_groups` of them; the
    rest are labelled by their reason, surplus valid groups by "over_target"."""
    if target_groups is not None and target_groups < 0:
        raise ValueError(f"target_groups must be >= 0 or None, got {target_groups}")
    bad = {g for gs in dropped.values() for g in gs}
    good = [g for g in order if g not in bad]
    kept = good if target_groups is None else good[:target_groups]

    def members(gs: list[int]) -> Tensor:
        return torch.isin(group_ids, torch.tensor(gs, dtype=group_ids.dtype))  # [N] bool

    reasons = {reason: members(gs) for reason, gs in dropped.items()}
    reasons["over_target"] = members(good[len(kept) :])
    shortfall = 0 if target_groups is None else max(target_groups - len(good), 0)
    return FilterResult(
        reasons=reasons, num_trajectories=group_ids.numel(), kept_groups=kept, shortfall=shortfall
    )


# --- trajectory filters --------------------------------------------------------------------


def void_turn_filter(void_turn: Tensor | Sequence[bool]) -> FilterResult:
    """SimpleTIR (arXiv 2509.02479): drop from the loss every trajectory with a void turn
    (a turn with neither a complete code block nor a final answer). Apply after advantages,
    so the trajectory still counts in its group's statistics.

    void_turn # [N] bool
    """
    flags = _as_flags(void_turn, "void_turn")  # [N]
    return FilterResult(reasons={"void_turn": flags.clone()}, num_trajectories=flags.numel())


def overlong_filter(
    truncated: Tensor | Sequence[bool],
    group_ids: Tensor | None = None,
    min_group_size: int | None = None,
) -> FilterResult:
    """Overlong filtering: truncated trajectories (hit the length limit) get zero loss
    (DAPO, arXiv 2503.14476), so the model is not punished for reasoning that was cut off.

    With group_ids and min_group_size, also drop every group that keeps fewer than
    min_group_size untruncated samples (SimpleTIR `remove_clip`, min_n=4), reason
    "overlong_group".
    truncated # [N] bool; group_ids # [N]
    """
    flags = _as_flags(truncated, "truncated")  # [N]
    reasons = {"overlong": flags.clone()}
    if min_group_size is not None:
        if group_ids is None:
            raise ValueError("overlong_filter(min_group_size=...) needs group_ids")
        order = _groups_in_order(group_ids)
        small = [g for g in order if int((~flags[group_ids == g]).sum()) < min_group_size]
        in_small = torch.isin(group_ids, torch.tensor(small, dtype=group_ids.dtype))  # [N]
        reasons["overlong_group"] = in_small & ~flags  # [N]; truncated ones are already "overlong"
    return FilterResult(reasons=reasons, num_trajectories=flags.numel())


# --- group filters -------------------------------------------------------------------------


def dynamic_sampling_filter(
    rewards: Tensor,
    group_ids: Tensor,
    target_groups: int | None = None,
    min_std: float = 0.0,
) -> FilterResult:
    """DAPO dynamic sampling (arXiv 2503.14476): drop groups whose rewards are all equal
    (their group-relative advantages are all 0, so they only dilute the batch), then keep
    the first `target_groups` remaining groups in arrival order.

    Never raises when there are too few: `shortfall` says how many groups are missing and
    the trainer trains on what it has. min_std > 0 also drops groups whose population std
    is below it (SimpleTIR's rejection sampling uses np.std < 1e-3). Singleton groups are
    zero-variance.
    rewards # [N]; group_ids # [N]
    """
    if rewards.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards and group_ids must be [N]; got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    order = _groups_in_order(group_ids)
    flat = []
    for g in order:
        r = rewards[group_ids == g].to(torch.float64)  # [n_g]
        if bool((r == r[0]).all()) or float(r.std(correction=0)) < min_std:
            flat.append(g)
    return _take_groups(group_ids, order, {"zero_variance": flat}, target_groups)


def group_pass_rates(success: Tensor, group_ids: Tensor) -> tuple[list[int], Tensor]:
    """Per-group pass rate: (group ids in first-appearance order, mean success [G])."""
    return _group_mean(success.to(torch.float64), group_ids)


def pass_rate_filter(
    success: Tensor,
    group_ids: Tensor,
    low: float = 0.2,
    high: float = 0.8,
    target_groups: int | None = None,
) -> FilterResult:
    """Balanced online difficulty filtering (Bae et al., arXiv 2504.03380): keep prompts
    whose group pass rate p lies in [low, high]; p = 0 and p = 1 are always dropped.

    The band is not given in the paper's primary text; [0.2, 0.8] is a secondary source's
    reading of it and SimpleTIR's README uses 0.1_0.9. Reasons:
    "too_hard" (p < low or p = 0), "too_easy" (p > high or p = 1), "over_target".
    success # [N] 1/0 (or bool) per trajectory; group_ids # [N]
    """
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(
            f"pass-rate band must satisfy 0 <= low <= high <= 1; got low={low}, high={high}"
        )
    s = success.to(torch.float64)  # [N]
    if bool(((s < 0) | (s > 1)).any()):
        raise ValueError(
            "pass_rate_filter needs success flags in [0, 1], got values outside; for +-1 "
            "rewards pass (rewards > 0)"
        )
    order, rates = group_pass_rates(s, group_ids)  # rates: [G]
    hard = [g for g, p in zip(order, rates.tolist(), strict=True) if p < low or p == 0.0]
    easy = [g for g, p in zip(order, rates.tolist(), strict=True) if p > high or p == 1.0]
    res = _take_groups(group_ids, order, {"too_hard": hard, "too_easy": easy}, target_groups)
    res.group_stats["pass_rate"] = rates.tolist()
    return res


# --- reward shaping ---------------------------------------------------------------------------


def overlong_penalty(lengths: Tensor, max_length: int, buffer: int, factor: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476; CIR's StillRewardManager):
    min(-(L - (L_max - L_buf)) / L_buf * factor, 0), floored at -factor.

    0 up to L_max - L_buf, then linear down to -factor at L_max. The floor reproduces the
    paper's -1 for L > L_max; for L <= L_max it equals CIR's formula exactly. Add the result
    to the reward. lengths # [N] -> # [N] float64
    """
    if not 0 < buffer <= max_length:
        raise ValueError(
            f"overlong buffer must satisfy 0 < buffer <= max_length; got buffer={buffer}, max_length={max_length}"
        )
    excess = lengths.to(torch.float64) - (max_length - buffer)  # [N]
    return (-excess / buffer * factor).clamp(min=-factor, max=0.0)  # [N]
