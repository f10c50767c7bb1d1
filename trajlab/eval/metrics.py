"""Evaluation metrics over scored trajectories.

    metrics = compute_metrics(trajectories, wall_time_s=..., ks=(1, 4, 16))

Correctness of a trajectory is `metadata["correct"]` (set by the scorer). Metrics:

- accuracy: mean over examples of the fraction of correct samples (equals pass@1)
- pass@k: the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374),
  1 - C(n - c, k) / C(n, k), averaged over examples with n >= k samples
- maj@k: majority vote over the first k samples' predictions (ties go to the answer
  seen first; trajectories without a prediction do not vote); correct if the winning
  prediction was scored correct
- mixed_rate (n > 1): fraction of examples with both right and wrong samples, i.e. the
  share of GRPO groups of this size that would carry a learning signal
- tool statistics: tool-call rate (fraction of trajectories with a call), calls per
  trajectory, tool error rate (failed calls / calls), calls by tool and by status, and
  per tool (`tool_stats`): calls, calls per trajectory, error rate, mean and p50 latency
- QA: `em`, `f1`, `cover_em`, means over trajectories whose reward reports them as
  components (every reward in rewards/qa.py does); `retrieval_recall`, the mean of
  metadata["retrieval_recall"] where the scorer set it (the fraction of gold
  supporting titles the search tool returned), and `retrieval_all_found`, the
  fraction of those trajectories that retrieved every gold title
- lengths: response tokens (model + tool) and model tokens per trajectory
- stop reasons: counts
- throughput: model tokens per second of wall time
- intervals: `<metric>_ci` = [low, high], a 95 % bootstrap interval over examples of
  accuracy, tool-call rate, answered rate, em/f1/cover_em, retrieval recall, reward and
  model tokens (trajlab.eval.compare.intervals)

What this module does not do: decide correctness; it reads what the scorer wrote.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from trajlab.types import Trajectory


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one example with n samples of which c are correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(predictions: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """True if the most common prediction (first seen wins ties) was scored correct."""
    votes: Counter[str] = Counter()
    first: dict[str, int] = {}
    is_correct: dict[str, bool] = {}
    for i, (p, c) in enumerate(zip(predictions, correct)):
        if p is None:
            continue
        key = _norm(p)
        votes[key] += 1
        first.setdefault(key, i)
        is_correct[key] = is_correct.get(key, False) or bool(c)
    if not votes:
        return False
    winner = max(votes, key=lambda k: (votes[k], -first[k]))
    return is_correct[winner]


def _norm(p: str) -> str:
    return " ".join(p.strip().split()).rstrip(".").lower()


def default_ks(n: int) -> list[int]:
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n]
    if n not in ks:
        ks.append(n)
    return ks


def compute_metrics(
    trajectories: Iterable[Trajectory],
    wall_time_s: float | None = None,
    ks: Sequence[int] | None = None,
) -> dict[str, Any]:
    trajs = list(trajectories)
    if not trajs:
        return {"num_trajectories": 0}
    by_example: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        by_example[t.example_id].append(t)
    for group in by_example.values():
        group.sort(key=lambda t: t.sample_index)
    out = sample_metrics(list(by_example.values()), ks)
    out["num_trajectories"] = len(trajs)
    out.update(tool_metrics(trajs))
    out.update(qa_metrics(trajs))
    out["response_tokens_mean"] = _mean(len(t.response_token_ids) for t in trajs)
    out["model_tokens_mean"] = _mean(t.num_model_tokens for t in trajs)
    out["turns_mean"] = _mean(t.metadata.get("turns", 0) for t in trajs)
    out["stop_reasons"] = dict(Counter(t.stop_reason or "unknown" for t in trajs))
    out["answered_rate"] = _mean(t.prediction is not None for t in trajs)
    rewards = [t.reward.total for t in trajs if t.reward is not None]
    if rewards:
        out["reward_mean"] = _mean(rewards)
    from trajlab.eval.compare import intervals

    out.update(intervals(trajs))
    if wall_time_s is not None:
        out["wall_time_s"] = wall_time_s
        total_model = sum(t.num_model_tokens for t in trajs)
        out["model_tokens_per_s"] = total_model / wall_time_s if wall_time_s > 0 else 0.0
    return out


def _correct(t: Trajectory) -> bool:
    return bool(t.metadata.get("correct", False))


def sample_metrics(
    groups: list[list[Trajectory]], ks: Sequence[int] | None = None
) -> dict[str, Any]:
    """Accuracy, pass@k and maj@k over groups of samples of the same example."""
    n_min = min(len(g) for g in groups)
    ks = list(ks) if ks is not None else default_ks(n_min)
    out: dict[str, Any] = {
        "num_examples": len(groups),
        "samples_per_example": n_min,
        "accuracy": _mean(sum(map(_correct, g)) / len(g) for g in groups),
    }
    if n_min > 1:
        # examples with both right and wrong samples: the GRPO groups that carry a signal
        out["mixed_rate"] = _mean(0 < sum(map(_correct, g)) < len(g) for g in groups)
    for k in ks:
        if k <= n_min:
            out[f"pass@{k}"] = _mean(pass_at_k(len(g), sum(map(_correct, g)), k) for g in groups)
            out[f"maj@{k}"] = _mean(
                majority_vote([t.prediction for t in g[:k]], [_correct(t) for t in g[:k]])
                for g in groups
            )
    return out


def tool_metrics(trajs: list[Trajectory]) -> dict[str, Any]:
    """How often tools were called, how they answered, how long they took."""
    calls = [c for t in trajs for c in t.tool_calls]
    return {
        "tool_call_rate": _mean(bool(t.tool_calls) for t in trajs),
        "tool_calls_per_trajectory": len(calls) / len(trajs),
        "tool_error_rate": _mean(not c.ok for c in calls) if calls else 0.0,
        "tool_calls_by_tool": dict(Counter(c.tool for c in calls)),
        "tool_calls_by_status": dict(Counter(c.status for c in calls)),
        "tool_latency_s_mean": _mean(c.latency_s for c in calls) if calls else 0.0,
        "tool_stats": tool_stats(trajs),
    }


def qa_metrics(trajs: list[Trajectory]) -> dict[str, Any]:
    """EM, F1 and cover-EM where the reward has them; retrieval recall where it was scored."""
    out: dict[str, Any] = {}
    for key in ("em", "f1", "cover_em"):
        values = [v for t in trajs if (v := _component(t, key)) is not None]
        if values:
            out[key] = _mean(values)
    recalls = [t.metadata["retrieval_recall"] for t in trajs if "retrieval_recall" in t.metadata]
    if recalls:
        out["retrieval_recall"] = _mean(recalls)
        out["retrieval_all_found"] = _mean(r >= 1.0 for r in recalls)
    return out


def tool_stats(trajs: Sequence[Trajectory]) -> dict[str, dict[str, float]]:
    """Per tool: calls, calls per trajectory, error rate, mean and median latency (s)."""
    by_tool: dict[str, list[Any]] = defaultdict(list)
    for t in trajs:
        for c in t.tool_calls:
            by_tool[c.tool].append(c)
    out = {}
    for tool in sorted(by_tool):
        calls = by_tool[tool]
        latencies = sorted(c.latency_s for c in calls)
        mid = len(latencies) // 2
        p50 = latencies[mid] if len(latencies) % 2 else (latencies[mid - 1] + latencies[mid]) / 2
        out[tool] = {
            "calls": len(calls),
            "calls_per_trajectory": len(calls) / len(trajs),
            "error_rate": _mean(not c.ok for c in calls),
            "latency_s_mean": _mean(latencies),
            "latency_s_p50": p50,
        }
    return out


def _component(t: Trajectory, key: str) -> float | None:
    """A reward component by name, or as `reward/key` when several rewards were combined."""
    if t.reward is None:
        return None
    comps = t.reward.components
    if key in comps:
        return comps[key]
    return next((v for k, v in comps.items() if k.endswith("/" + key)), None)


def _mean(xs: Iterable[float | bool | int]) -> float:
    xs = list(xs)
    return float(sum(xs)) / len(xs) if xs else 0.0
