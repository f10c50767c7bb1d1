"""The mathematics of the RL trainer as pure functions over torch tensors.

    advantages.py  ADVANTAGES: grpo, dr_grpo, rloo, reinforce_pp_baseline, gspo; broadcast to tokens
    losses.py      PPO clip (clip-higher, dual-clip), token/sequence ratios (GSPO), aggregations,
                   TIS, KL estimators k1/k2/k3, entropy
    filters.py     void-turn, overlong, zero-variance (dynamic sampling), pass-rate band; overlong penalty
    length.py      ThinkPrune hard limit and schedule, soft and group-relative length penalties

No state, no models: the trainer (trajlab/train/) composes these. docs/algorithms.md lists
every option with its formula, its paper and its name.
"""

from trajlab.algos.advantages import (
    ADVANTAGES,
    broadcast_to_tokens,
    compute_advantages,
    get_advantage_fn,
    group_ids_from_keys,
)
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
from trajlab.algos.length import (
    group_length_reward,
    length_limited_reward,
    soft_length_penalty,
    thinkprune_limit,
)
from trajlab.algos.losses import (
    AGG_MODES,
    KL_ESTIMATORS,
    PolicyLossConfig,
    PolicyLossOutput,
    aggregate,
    entropy_from_logits,
    fold_kl_into_rewards,
    kl_penalty,
    policy_loss,
    ppo_clip_token_losses,
    sequence_log_ratio,
    tis_weights,
    token_log_ratio,
)

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "KL_ESTIMATORS",
    "FilterResult",
    "PolicyLossConfig",
    "PolicyLossOutput",
    "aggregate",
    "broadcast_to_tokens",
    "combine",
    "compute_advantages",
    "dynamic_sampling_filter",
    "entropy_from_logits",
    "fold_kl_into_rewards",
    "get_advantage_fn",
    "group_ids_from_keys",
    "group_length_reward",
    "group_pass_rates",
    "kl_penalty",
    "length_limited_reward",
    "overlong_filter",
    "overlong_penalty",
    "pass_rate_filter",
    "policy_loss",
    "ppo_clip_token_losses",
    "sequence_log_ratio",
    "soft_length_penalty",
    "thinkprune_limit",
    "tis_weights",
    "token_log_ratio",
    "void_turn_filter",
]
