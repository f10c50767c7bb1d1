"""Which sampled answers say the same thing: the clusters a vote counts.

    same = answer_equality("math")     # or "qa"
    clusters = cluster_answers(["18", "18.0", "$18", "20", None], same)
    # -> [0, 0, 0, 1, None]

Math answers are equal when trajlab.rewards.math.is_equivalent says so (numbers by
value, anything else through math-verify), the test the scorer applies against the
reference; QA answers when their SQuAD normalisations are equal (lower case, no
punctuation or articles). A trajectory without an extracted answer is in no cluster.

What it does not do: decide correctness (the scorer does, against the reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Equality = Callable[[str, str], bool]
KINDS = ("math", "qa")


def answer_equality(kind: str) -> Equality:
    """The equality of answers of `kind` ('math' or 'qa')."""
    if kind == "math":
        from trajlab.rewards.math import is_equivalent

        return lambda a, b: is_equivalent(a, b)
    if kind == "qa":
        from trajlab.rewards.qa import normalize_answer

        return lambda a, b: normalize_answer(a) == normalize_answer(b)
    raise ValueError(f"answer kind must be one of {', '.join(KINDS)}, got {kind!r}")


def answer_kind(reward_names: Sequence[str]) -> str:
    """'qa' when the run is scored by a QA reward (trajlab.rewards.QA_REWARDS), else 'math'."""
    from trajlab.rewards import QA_REWARDS

    return "qa" if any(n in QA_REWARDS for n in reward_names) else "math"


def cluster_answers(predictions: Sequence[str | None], same: Equality) -> list[int | None]:
    """Cluster id per prediction, numbered in order of first appearance; None for no answer.

    An answer joins the first cluster whose first member it equals (math-verify's
    equality need not be transitive, so the first member stands for its cluster)."""
    heads: list[str] = []
    out: list[int | None] = []
    for p in predictions:
        if p is None or not p.strip():
            out.append(None)
            continue
        for cid, head in enumerate(heads):
            if p.strip() == head or same(head, p.strip()):
                out.append(cid)
                break
        else:
            heads.append(p.strip())
            out.append(len(heads) - 1)
    return out
