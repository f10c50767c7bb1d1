"""Selection rules: which of N sampled trajectories a strategy returns.

    i = majority(clusters)                     # self-consistency (Wang et al. 2022)
    i = weighted_majority(clusters, scores)    # votes weighted by a verifier's score
    i = best_of_n(scores)                      # the highest-scored sample

Each rule returns the index of the chosen sample (None when nothing can be chosen), so
the answer returned is a real trajectory of the ledger, not a string. Ties are broken
in favour of what was sampled first, which makes every rule deterministic. `clusters`
comes from answers.cluster_answers (None: the sample has no answer and does not vote).

- majority: the cluster with the most members; its first member is returned.
- weighted_majority: the cluster with the largest sum of scores; its highest-scored
  member is returned (first on ties). With all scores equal it is `majority`.
- best_of_n: the highest score over all samples, answered or not.

What it does not do: score (verifiers.py) or cluster (answers.py).
"""

from __future__ import annotations

from collections.abc import Sequence


def majority(clusters: Sequence[int | None]) -> int | None:
    """Index of the first member of the largest cluster; first cluster seen wins ties."""
    return weighted_majority(clusters, [1.0] * len(clusters))


def weighted_majority(clusters: Sequence[int | None], scores: Sequence[float]) -> int | None:
    """Index of the best member of the cluster with the largest total score."""
    if len(clusters) != len(scores):
        raise ValueError(f"{len(clusters)} clusters but {len(scores)} scores")
    total: dict[int, float] = {}
    best: dict[int, int] = {}
    for i, (c, s) in enumerate(zip(clusters, scores)):
        if c is None:
            continue
        total[c] = total.get(c, 0.0) + float(s)
        if c not in best or s > scores[best[c]]:
            best[c] = i
    if not total:
        return None
    # dicts keep insertion order, and max keeps the first maximum: first cluster wins ties
    winner = max(total, key=lambda c: total[c])
    return best[winner]


def best_of_n(scores: Sequence[float]) -> int | None:
    """Index of the highest score (the first on ties); None for no samples."""
    if not scores:
        return None
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


RULES = ("vote", "weighted_vote", "best_of_n")


def choose(rule: str, clusters: Sequence[int | None], scores: Sequence[float]) -> int | None:
    """The sample `rule` (one of RULES) picks."""
    if rule == "vote":
        return majority(clusters)
    if rule == "weighted_vote":
        return weighted_majority(clusters, scores)
    if rule == "best_of_n":
        return best_of_n(scores)
    raise ValueError(f"method must be one of {', '.join(RULES)}, got {rule!r}")
